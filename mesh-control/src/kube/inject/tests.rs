#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use super::template::*;
use super::*;

fn pod(labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-5d8f9c7b4-",
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-5d8f9c7b4",
                "uid": "u1", "controller": true
            }]
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "initContainers": [{"name": "migrate", "image": "migrate:1"}],
            "containers": [
                {"name": "reviews", "image": "reviews:1", "ports": [{"containerPort": 9080}]},
                {"name": "logger", "image": "logger:1", "env": [{"name": "A", "value": "b"}]}
            ]
        }
    })
}

fn app_pod() -> Value {
    pod(
        json!({"app": "reviews", "version": "v1", "pod-template-hash": "5d8f9c7b4"}),
        json!({}),
    )
}

fn with_label(mut p: Value, k: &str, v: &str) -> Value {
    p["metadata"]["labels"][k] = json!(v);
    p
}

fn with_annotation(mut p: Value, k: &str, v: &str) -> Value {
    p["metadata"]["annotations"][k] = json!(v);
    p
}

fn review_body(pod: &Value, op: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "a1b2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo",
            "operation": op,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod
        }
    }))
    .unwrap()
}

/// The response to a CREATE of `pod` in `bookinfo` (labelled
/// `ns_labels`) under `config`, and the pod with its patch applied.
fn answer_with(pod: &Value, ns_labels: &[(&str, &str)], config: &InjectConfig) -> (Value, Value) {
    let labels: Labels = ns_labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = review(&review_body(pod, "CREATE"), config, &|ns| {
        assert_eq!(ns, "bookinfo");
        Some(labels.clone())
    });
    let v: Value = serde_json::from_slice(&out).unwrap();
    let response = v["response"].clone();
    assert_eq!(response["uid"], "a1b2");
    let mut patched = pod.clone();
    if let Some(patch) = patch_of(&response) {
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    (response, patched)
}

fn answer(pod: &Value, ns_labels: &[(&str, &str)]) -> (Value, Value) {
    answer_with(pod, ns_labels, &InjectConfig::default())
}

/// The JSONPatch of a response (bytes, as kube-rs writes them, or base64,
/// as Go does).
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let bytes: Vec<u8> = match response.get("patch")? {
        Value::Array(a) => a.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
        Value::String(s) => {
            use base64::prelude::{Engine, BASE64_STANDARD};
            BASE64_STANDARD.decode(s).unwrap()
        }
        other => panic!("patch is {other}"),
    };
    assert_eq!(response["patchType"], "JSONPatch");
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| *a == flag).map(|i| args[i + 1])
}

fn skipped(pod: &Value, ns_labels: &[(&str, &str)]) -> bool {
    let (response, patched) = answer(pod, ns_labels);
    assert_eq!(response["allowed"], true);
    response.get("patch").is_none() && &patched == pod
}

#[test]
fn a_pod_labelled_true_gets_init_then_native_sidecar() {
    let p = with_label(app_pod(), INJECT_LABEL, "true");
    let (response, out) = answer(&p, &[]);
    assert_eq!(response["allowed"], true);
    let spec = &out["spec"];
    // mesh-init, then the sidecar, then the pod's own init containers.
    assert_eq!(
        names(&spec["initContainers"]),
        [INIT_CONTAINER, SHIM_CONTAINER, "migrate"]
    );
    assert_eq!(names(&spec["containers"]), ["reviews", "logger"]);
    let init = &spec["initContainers"][0];
    assert!(init.get("restartPolicy").is_none());
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let init_args = args(init);
    assert_eq!(init_args[0], "iptables");
    assert_eq!(flag(&init_args, "--proxy-uid"), Some("1337"));
    assert_eq!(flag(&init_args, "--include-inbound-ports"), Some("*"));

    let shim = &spec["initContainers"][1];
    assert_eq!(shim["restartPolicy"], "Always");
    assert_eq!(shim["image"], "mesh-shim:dev");
    assert_eq!(shim["securityContext"]["runAsUser"], 1337);
    assert_eq!(shim["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(shim["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
    let a = args(shim);
    assert_eq!(a[0], "run");
    assert_eq!(
        flag(&a, "--xds-addr"),
        Some("https://meshd.istio-system.svc:15012")
    );
    assert_eq!(flag(&a, "--ca-addr"), Some("meshd.istio-system.svc:15012"));
    assert_eq!(flag(&a, "--ca-server-name"), Some("meshd.istio-system.svc"));
    assert_eq!(
        flag(&a, "--ca-root"),
        Some("/var/run/secrets/istio/root-cert.pem")
    );
    assert_eq!(
        flag(&a, "--ca-token-file"),
        Some("/var/run/secrets/tokens/istio-token")
    );
    assert_eq!(flag(&a, "--namespace"), Some("bookinfo"));
    assert_eq!(flag(&a, "--service-account"), Some("bookinfo-reviews"));
    assert_eq!(flag(&a, "--workload-name"), Some("reviews-v1"));
    assert!(a.contains(&"--capture-inbound"));
    let labels = flag(&a, "--labels").unwrap();
    assert!(
        labels.contains("app=reviews") && labels.contains("security.istio.io/tlsMode=istio"),
        "{labels}"
    );
    let env = names(&shim["env"]);
    assert_eq!(
        env,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "INSTANCE_IP",
            "SERVICE_ACCOUNT"
        ]
    );
    let ports: Vec<(u64, &str)> = shim["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_u64().unwrap(),
                p["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(15020, "http-envoy-prom"), (15021, "http-health")]);

    // Volumes: the projected token and the root certificate ConfigMap.
    let vols = &spec["volumes"];
    assert_eq!(names(vols), [TOKEN_VOLUME, ROOT_VOLUME]);
    let token = &vols[0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "istio-ca");
    assert_eq!(token["expirationSeconds"], 43200);
    assert_eq!(vols[1]["configMap"]["name"], ROOT_CONFIG_MAP);

    let labels = &out["metadata"]["labels"];
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
    let ann = &out["metadata"]["annotations"];
    let status: Value = serde_json::from_str(ann[STATUS_ANNOTATION].as_str().unwrap()).unwrap();
    assert_eq!(
        status["initContainers"],
        json!([INIT_CONTAINER, SHIM_CONTAINER])
    );
    assert_eq!(status["containers"], Value::Null);
    assert_eq!(status["volumes"], json!([TOKEN_VOLUME, ROOT_VOLUME]));
    assert_eq!(ann["kubectl.kubernetes.io/default-container"], "reviews");
    assert_eq!(ann["prometheus.io/port"], "15020");
}

#[test]
fn the_annotation_and_the_namespace_label_opt_in_too() {
    let by_annotation = with_annotation(app_pod(), INJECT_LABEL, "true");
    assert!(!skipped(&by_annotation, &[]));
    assert!(!skipped(&app_pod(), &[(NAMESPACE_LABEL, "enabled")]));
    // Nothing asks: untouched.
    assert!(skipped(&app_pod(), &[]));
    assert!(skipped(&app_pod(), &[("other", "enabled")]));
}

#[test]
fn an_opt_out_wins_over_the_namespace_and_the_label_over_the_annotation() {
    let out = with_label(app_pod(), INJECT_LABEL, "false");
    assert!(skipped(&out, &[(NAMESPACE_LABEL, "enabled")]));
    let out = with_annotation(app_pod(), INJECT_LABEL, "false");
    assert!(skipped(&out, &[(NAMESPACE_LABEL, "enabled")]));
    let label_wins = with_annotation(
        with_label(app_pod(), INJECT_LABEL, "false"),
        INJECT_LABEL,
        "true",
    );
    assert!(skipped(&label_wins, &[]));
    // A namespace that disabled injection wins over the pod.
    let p = with_label(app_pod(), INJECT_LABEL, "true");
    assert!(skipped(&p, &[(NAMESPACE_LABEL, "disabled")]));
}

#[test]
fn host_network_and_already_injected_pods_are_left_alone() {
    let mut host = with_label(app_pod(), INJECT_LABEL, "true");
    host["spec"]["hostNetwork"] = json!(true);
    assert!(skipped(&host, &[(NAMESPACE_LABEL, "enabled")]));

    let p = with_label(app_pod(), INJECT_LABEL, "true");
    let (_, injected) = answer(&p, &[]);
    assert!(skipped(&injected, &[(NAMESPACE_LABEL, "enabled")]));
}

#[test]
fn system_namespaces_updates_and_other_kinds_are_not_touched() {
    let p = with_label(app_pod(), INJECT_LABEL, "true");
    assert!(matches!(
        decide(&p, "kube-system", &Labels::new()),
        Decision::Skip(_)
    ));
    let out = review(
        &review_body(&p, "UPDATE"),
        &InjectConfig::default(),
        &|_| None,
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("patch").is_none());
    let garbage = review(b"{", &InjectConfig::default(), &|_| None);
    let v: Value = serde_json::from_slice(&garbage).unwrap();
    assert_eq!(v["response"]["allowed"], false);
}

#[test]
fn capture_annotations_become_iptables_flags() {
    let mut p = with_label(app_pod(), INJECT_LABEL, "true");
    for (k, v) in [
        ("traffic.sidecar.istio.io/includeInboundPorts", "9080,9443"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "9443"),
        (
            "traffic.sidecar.istio.io/excludeOutboundPorts",
            "3306, 5432",
        ),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/8",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.96.0.1/32",
        ),
    ] {
        p = with_annotation(p, k, v);
    }
    let (_, out) = answer(&p, &[]);
    let init = &out["spec"]["initContainers"][0];
    assert_eq!(init["name"], INIT_CONTAINER);
    let a = args(init);
    assert_eq!(flag(&a, "--include-inbound-ports"), Some("9080,9443"));
    assert_eq!(flag(&a, "--exclude-inbound-ports"), Some("9443"));
    assert_eq!(flag(&a, "--exclude-outbound-ports"), Some("3306, 5432"));
    assert_eq!(flag(&a, "--include-outbound-ip-ranges"), Some("10.0.0.0/8"));
    assert_eq!(
        flag(&a, "--exclude-outbound-ip-ranges"),
        Some("10.96.0.1/32")
    );
    // Every flag the injector writes is one `mesh-shim iptables` has
    // (the annotation table is the one place that maps them).
    for (_, f, _) in CAPTURE_ANNOTATIONS {
        assert!(a.contains(f), "{f}");
    }
}

#[test]
fn grpc_agent_writes_files_for_every_app_container_and_captures_nothing() {
    let p = with_annotation(
        with_label(app_pod(), INJECT_LABEL, "true"),
        TEMPLATES_ANNOTATION,
        "grpc-agent",
    );
    let (_, out) = answer(&p, &[]);
    let spec = &out["spec"];
    assert_eq!(names(&spec["initContainers"]), [AGENT_CONTAINER, "migrate"]);
    let agent = &spec["initContainers"][0];
    assert_eq!(agent["restartPolicy"], "Always");
    let a = args(agent);
    assert_eq!(a[0], "agent");
    assert_eq!(flag(&a, "--bootstrap-file"), Some(BOOTSTRAP_FILE));
    assert_eq!(flag(&a, "--cert-dir"), Some(CERT_DIR));
    assert_eq!(flag(&a, "--trust-domain"), Some("cluster.local"));
    assert_eq!(flag(&a, "--pod-name"), Some("$(POD_NAME)"));
    assert_eq!(agent["startupProbe"]["httpGet"]["port"], 15021);
    for c in spec["containers"].as_array().unwrap() {
        let env = c["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == GRPC_XDS_BOOTSTRAP && e["value"] == BOOTSTRAP_FILE),
            "{c}"
        );
        let mounts: Vec<(&str, &str)> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap(),
                    m["mountPath"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            mounts,
            [
                (XDS_VOLUME, "/etc/istio/proxy"),
                (DATA_VOLUME, "/var/lib/istio/data")
            ]
        );
    }
    // The logger's own env stays.
    assert_eq!(spec["containers"][1]["env"][0]["name"], "A");
    assert_eq!(
        names(&spec["volumes"]),
        [TOKEN_VOLUME, ROOT_VOLUME, XDS_VOLUME, DATA_VOLUME]
    );
    assert!(out["metadata"]["annotations"]
        .get("prometheus.io/port")
        .is_none());
}

#[test]
fn without_native_sidecars_the_shim_is_a_regular_container() {
    let config = InjectConfig {
        native_sidecars: false,
        ..InjectConfig::default()
    };
    let p = with_label(app_pod(), INJECT_LABEL, "true");
    let (_, out) = answer_with(&p, &[], &config);
    let spec = &out["spec"];
    assert_eq!(names(&spec["initContainers"]), [INIT_CONTAINER, "migrate"]);
    assert_eq!(
        names(&spec["containers"]),
        ["reviews", "logger", SHIM_CONTAINER]
    );
    assert!(spec["containers"][2].get("restartPolicy").is_none());
    let status: Value = serde_json::from_str(
        out["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["containers"], json!([SHIM_CONTAINER]));

    // The agent goes first and holds the app until its files are written.
    let g = with_annotation(p, TEMPLATES_ANNOTATION, "grpc-agent");
    let (_, out) = answer_with(&g, &[], &config);
    let c = &out["spec"]["containers"];
    assert_eq!(names(c), [AGENT_CONTAINER, "reviews", "logger"]);
    assert_eq!(
        c[0]["lifecycle"]["postStart"]["exec"]["command"],
        json!(["mesh-shim", "wait"])
    );
}

#[test]
fn an_unknown_template_is_refused_naming_the_known_ones() {
    let p = with_annotation(
        with_label(app_pod(), INJECT_LABEL, "true"),
        TEMPLATES_ANNOTATION,
        "gateway",
    );
    let (response, _) = answer(&p, &[]);
    assert_eq!(response["allowed"], false);
    let msg = response["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"gateway\"") && msg.contains("grpc-agent"),
        "{msg}"
    );
}

#[test]
fn existing_labels_and_a_bare_pod_are_handled() {
    // Canonical labels the pod has are kept; a pod with no labels,
    // annotations or init containers gets them created.
    let p = with_label(
        with_label(app_pod(), INJECT_LABEL, "true"),
        "service.istio.io/canonical-name",
        "ratings",
    );
    let (_, out) = answer(&p, &[]);
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-name"],
        "ratings"
    );
    let bare = json!({
        "metadata": {"name": "solo"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let (_, out) = answer(&bare, &[(NAMESPACE_LABEL, "enabled")]);
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        [INIT_CONTAINER, SHIM_CONTAINER]
    );
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-name"],
        "solo"
    );
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-revision"],
        "latest"
    );
    let a = args(&out["spec"]["initContainers"][1]);
    assert_eq!(flag(&a, "--service-account"), Some("default"));
    // The projected token needs one; the API server refuses it otherwise.
    assert_eq!(out["spec"]["serviceAccountName"], "default");
}
