//! What each template adds to a pod: containers with their flags (the
//! shim's real flags, named after Istio's annotations), volumes, labels
//! and annotations. A pure function of the pod and the config.

use serde_json::{json, Map, Value};

use super::{str_at, string_map, InjectConfig, Template, STATUS_ANNOTATION};

/// The capture init container (`mesh-shim iptables`).
pub const INIT_CONTAINER: &str = "mesh-init";
/// The sidecar container (`mesh-shim run`).
pub const SHIM_CONTAINER: &str = "mesh-shim";
/// The proxyless gRPC agent container (`mesh-shim agent`).
pub const AGENT_CONTAINER: &str = "mesh-agent";

/// The projected ServiceAccount token volume, its directory and file.
pub const TOKEN_VOLUME: &str = "istio-token";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "/var/run/secrets/tokens/istio-token";
/// The token's audience, as meshd's CA (and istiod) expects it.
pub const TOKEN_AUDIENCE: &str = "istio-ca";
const TOKEN_SECONDS: i64 = 43200;

/// The volume of the root certificate ConfigMap.
pub const ROOT_VOLUME: &str = "istiod-ca-cert";
/// The ConfigMap holding `root-cert.pem` in every namespace (Istio's).
pub const ROOT_CONFIG_MAP: &str = "istio-ca-root-cert";
const ROOT_DIR: &str = "/var/run/secrets/istio";
const ROOT_FILE: &str = "/var/run/secrets/istio/root-cert.pem";

/// The emptyDir holding the gRPC bootstrap (grpc-agent).
pub const XDS_VOLUME: &str = "istio-xds";
const XDS_DIR: &str = "/etc/istio/proxy";
/// Where `mesh-agent` writes the bootstrap, and what
/// `GRPC_XDS_BOOTSTRAP` says.
pub const BOOTSTRAP_FILE: &str = "/etc/istio/proxy/grpc-bootstrap.json";
/// The emptyDir holding the certificate files (grpc-agent).
pub const DATA_VOLUME: &str = "istio-data";
/// Where `mesh-agent` writes `cert-chain.pem`, `key.pem`, `root-cert.pem`.
pub const CERT_DIR: &str = "/var/lib/istio/data";
/// The variable stock gRPC reads its bootstrap path from.
pub const GRPC_XDS_BOOTSTRAP: &str = "GRPC_XDS_BOOTSTRAP";

const READY_PORT: u16 = 15021;
const READY_PATH: &str = "/healthz/ready";
const METRICS_PORT: u16 = 15020;

/// Istio's capture annotations and the `mesh-shim iptables` flag each one
/// sets. (`includeOutboundPorts` has no flag in the shim and is ignored.)
pub const CAPTURE_ANNOTATIONS: &[(&str, &str, &str)] = &[
    (
        "traffic.sidecar.istio.io/includeInboundPorts",
        "--include-inbound-ports",
        "*",
    ),
    (
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "--exclude-inbound-ports",
        "",
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "--exclude-outbound-ports",
        "",
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "--include-outbound-ip-ranges",
        "*",
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "--exclude-outbound-ip-ranges",
        "",
    ),
];

/// What the pod is, read once.
struct Pod<'a> {
    namespace: &'a str,
    service_account: String,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    workload: String,
}

pub(super) fn apply(pod: &Value, namespace: &str, t: Template, config: &InjectConfig) -> Value {
    let mut p = Pod {
        namespace,
        service_account: str_at(pod, &["spec", "serviceAccountName"])
            .or_else(|| str_at(pod, &["spec", "serviceAccount"]))
            .unwrap_or("default")
            .to_string(),
        labels: object_at(pod, "labels"),
        annotations: object_at(pod, "annotations"),
        workload: workload_name(pod),
    };
    add_labels(&mut p);

    let mut out = pod.clone();
    let mut volumes = vec![token_volume(), root_volume()];
    let (init, sidecar) = match t {
        Template::Sidecar => (Some(init_container(&p, config)), shim_container(&p, config)),
        Template::GrpcAgent => {
            volumes.push(json!({"name": XDS_VOLUME, "emptyDir": {}}));
            volumes.push(json!({"name": DATA_VOLUME, "emptyDir": {}}));
            (None, agent_container(&p, config))
        }
    };
    let sidecar_name = name_of(&sidecar);
    let spec = object_mut(&mut out, "spec");
    // A projected token needs a service account; the API server's
    // ServiceAccount admission plugin (before webhooks) sets the same
    // default, so this only matters where that plugin is off.
    spec.entry("serviceAccountName")
        .or_insert_with(|| json!(p.service_account));

    let app: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let default_container = app.first().map(name_of);
    let app: Vec<Value> = match t {
        Template::Sidecar => app,
        Template::GrpcAgent => app.into_iter().map(grpc_app_container).collect(),
    };
    let existing_init: Vec<Value> = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    // mesh-init must run before the sidecar; both before the pod's own
    // init containers, so those already have the mesh (native sidecars).
    let mut init_containers: Vec<Value> = init.iter().cloned().collect();
    let mut added_init: Vec<String> = init.iter().map(name_of).collect();
    let mut added_containers: Vec<String> = Vec::new();
    let containers = if config.native_sidecars {
        let mut s = sidecar;
        s["restartPolicy"] = json!("Always");
        init_containers.push(s);
        added_init.push(sidecar_name);
        app
    } else if t == Template::GrpcAgent {
        // Regular containers start in order and the next waits for a
        // postStart hook: the app starts once the files are written.
        let mut s = sidecar;
        s["lifecycle"] = json!({"postStart": {"exec": {"command": ["mesh-shim", "wait"]}}});
        added_containers.push(sidecar_name);
        std::iter::once(s).chain(app).collect()
    } else {
        added_containers.push(sidecar_name);
        app.into_iter().chain(std::iter::once(sidecar)).collect()
    };
    init_containers.extend(existing_init);
    if !init_containers.is_empty() {
        spec.insert("initContainers".into(), Value::Array(init_containers));
    }
    spec.insert("containers".into(), Value::Array(containers));

    let mut all_volumes: Vec<Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added_volumes = Vec::new();
    for v in volumes {
        let name = name_of(&v);
        if !all_volumes.iter().any(|x| name_of(x) == name) {
            all_volumes.push(v);
        }
        added_volumes.push(name);
    }
    spec.insert("volumes".into(), Value::Array(all_volumes));

    let list = |v: Vec<String>| if v.is_empty() { Value::Null } else { json!(v) };
    let status = json!({
        "initContainers": list(added_init),
        "containers": list(added_containers),
        "volumes": list(added_volumes),
        "imagePullSecrets": null,
        "revision": "default",
    });
    let ann = &mut p.annotations;
    ann.insert(STATUS_ANNOTATION.into(), json!(status.to_string()));
    if let Some(c) = default_container {
        ann.entry("kubectl.kubernetes.io/default-container")
            .or_insert(json!(c));
    }
    if t == Template::Sidecar && !ann.keys().any(|k| k.starts_with("prometheus.io/")) {
        // Where the shim's merged metrics are, for Prometheus' pod
        // discovery (Istio's metrics merging writes the same).
        ann.insert("prometheus.io/scrape".into(), json!("true"));
        ann.insert("prometheus.io/port".into(), json!(METRICS_PORT.to_string()));
        ann.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
    }
    let meta = object_mut(&mut out, "metadata");
    meta.insert("labels".into(), Value::Object(p.labels));
    meta.insert("annotations".into(), Value::Object(p.annotations));
    out
}

/// `v[key]` as an object, created (replacing a non-object) if needed.
fn object_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let slot = &mut v[key];
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("set to an object above"),
    }
}

fn object_at(pod: &Value, key: &str) -> Map<String, Value> {
    string_map(pod, &["metadata", key])
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn name_of(v: &Value) -> String {
    str_at(v, &["name"]).unwrap_or("").to_string()
}

/// `security.istio.io/tlsMode` and the canonical service labels (kept if
/// the pod has them), as Istio's injector adds them.
fn add_labels(p: &mut Pod<'_>) {
    let get = |k: &str| p.labels.get(k).and_then(Value::as_str).map(str::to_string);
    let name = get("app.kubernetes.io/name")
        .or_else(|| get("app"))
        .unwrap_or_else(|| p.workload.clone());
    let revision = get("app.kubernetes.io/version")
        .or_else(|| get("version"))
        .unwrap_or_else(|| "latest".into());
    let l = &mut p.labels;
    l.insert("security.istio.io/tlsMode".into(), json!("istio"));
    l.entry("service.istio.io/canonical-name")
        .or_insert(json!(name));
    l.entry("service.istio.io/canonical-revision")
        .or_insert(json!(revision));
}

/// The Deployment (or other controller) a pod belongs to, as telemetry
/// names it: a ReplicaSet owner without its `pod-template-hash` suffix,
/// else the owner, else the pod's own name.
fn workload_name(pod: &Value) -> String {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let owner = owners.and_then(|o| {
        o.iter()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            .or_else(|| o.first())
    });
    if let Some(o) = owner {
        let name = str_at(o, &["name"]).unwrap_or("");
        let hash = str_at(pod, &["metadata", "labels", "pod-template-hash"]);
        if str_at(o, &["kind"]) == Some("ReplicaSet") {
            if let Some(base) = hash.and_then(|h| name.strip_suffix(&format!("-{h}"))) {
                return base.to_string();
            }
        }
        if !name.is_empty() {
            return name.to_string();
        }
    }
    str_at(pod, &["metadata", "name"])
        .map(str::to_string)
        .or_else(|| {
            str_at(pod, &["metadata", "generateName"]).map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| "workload".into())
}

fn labels_flag(p: &Pod<'_>) -> String {
    p.labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect::<Vec<_>>()
        .join(",")
}

fn token_volume() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_SECONDS,
            "path": "istio-token",
        }}]},
    })
}

fn root_volume() -> Value {
    json!({"name": ROOT_VOLUME, "configMap": {"name": ROOT_CONFIG_MAP}})
}

fn downward_env() -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    json!([
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ])
}

fn ready_probe(period: u32, failures: u32) -> Value {
    json!({
        "httpGet": {"path": READY_PATH, "port": READY_PORT, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    })
}

/// The shim's flags for meshd's TLS port and CA, and who the workload is.
fn mesh_flags(p: &Pod<'_>, config: &InjectConfig) -> Vec<String> {
    let addr = &config.meshd_address;
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    [
        "--xds-addr",
        &format!("https://{addr}"),
        "--ca-addr",
        addr,
        "--ca-root",
        ROOT_FILE,
        "--ca-server-name",
        host,
        "--ca-token-file",
        TOKEN_FILE,
        "--namespace",
        p.namespace,
        "--service-account",
        &p.service_account,
        "--labels",
        &labels_flag(p),
        "--workload-name",
        &p.workload,
    ]
    .map(str::to_string)
    .to_vec()
}

fn proxy_security(config: &InjectConfig) -> Value {
    json!({
        "runAsUser": config.proxy_uid,
        "runAsGroup": config.proxy_uid,
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

fn identity_mounts() -> Vec<Value> {
    vec![
        json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}),
        json!({"name": ROOT_VOLUME, "mountPath": ROOT_DIR, "readOnly": true}),
    ]
}

/// `mesh-init`: `mesh-shim iptables` with the pod's capture annotations.
fn init_container(p: &Pod<'_>, config: &InjectConfig) -> Value {
    let mut args = vec![
        "iptables".to_string(),
        "--proxy-uid".into(),
        config.proxy_uid.to_string(),
    ];
    for (annotation, flag, default) in CAPTURE_ANNOTATIONS {
        let value = p
            .annotations
            .get(*annotation)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or(default);
        if !value.is_empty() {
            args.push((*flag).to_string());
            args.push(value.to_string());
        }
    }
    json!({
        "name": INIT_CONTAINER,
        "image": config.shim_image,
        "command": ["mesh-shim"],
        "args": args,
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    })
}

/// `mesh-shim`: `mesh-shim run --capture-inbound` against meshd.
fn shim_container(p: &Pod<'_>, config: &InjectConfig) -> Value {
    let mut args = vec!["run".to_string()];
    args.extend(mesh_flags(p, config));
    args.push("--capture-inbound".into());
    json!({
        "name": SHIM_CONTAINER,
        "image": config.shim_image,
        "command": ["mesh-shim"],
        "args": args,
        "env": downward_env(),
        "ports": [
            {"containerPort": METRICS_PORT, "name": "http-envoy-prom", "protocol": "TCP"},
            {"containerPort": READY_PORT, "name": "http-health", "protocol": "TCP"},
        ],
        "readinessProbe": ready_probe(15, 4),
        "startupProbe": ready_probe(1, 600),
        "securityContext": proxy_security(config),
        "volumeMounts": identity_mounts(),
    })
}

/// `mesh-agent`: `mesh-shim agent`, the bootstrap and certificate files.
fn agent_container(p: &Pod<'_>, config: &InjectConfig) -> Value {
    let mut args = vec!["agent".to_string()];
    args.extend(mesh_flags(p, config));
    args.extend(
        [
            "--trust-domain",
            &config.trust_domain,
            "--cluster-id",
            &config.cluster_id,
            "--pod-name",
            "$(POD_NAME)",
            "--instance-ip",
            "$(INSTANCE_IP)",
            "--bootstrap-file",
            BOOTSTRAP_FILE,
            "--cert-dir",
            CERT_DIR,
        ]
        .map(str::to_string),
    );
    let mut mounts = identity_mounts();
    mounts.push(json!({"name": XDS_VOLUME, "mountPath": XDS_DIR}));
    mounts.push(json!({"name": DATA_VOLUME, "mountPath": CERT_DIR}));
    json!({
        "name": AGENT_CONTAINER,
        "image": config.shim_image,
        "command": ["mesh-shim"],
        "args": args,
        "env": downward_env(),
        "ports": [{"containerPort": READY_PORT, "name": "http-health", "protocol": "TCP"}],
        "readinessProbe": ready_probe(15, 4),
        "startupProbe": ready_probe(1, 600),
        "securityContext": proxy_security(config),
        "volumeMounts": mounts,
    })
}

/// An app container of a grpc-agent pod: `GRPC_XDS_BOOTSTRAP` and the
/// bootstrap and certificate directories, unless it has them already.
fn grpc_app_container(mut c: Value) -> Value {
    let env = array_mut(&mut c, "env");
    if !env.iter().any(|e| name_of(e) == GRPC_XDS_BOOTSTRAP) {
        env.push(json!({"name": GRPC_XDS_BOOTSTRAP, "value": BOOTSTRAP_FILE}));
    }
    let mounts = array_mut(&mut c, "volumeMounts");
    for (volume, path) in [(XDS_VOLUME, XDS_DIR), (DATA_VOLUME, CERT_DIR)] {
        let taken = mounts
            .iter()
            .any(|m| name_of(m) == volume || str_at(m, &["mountPath"]) == Some(path));
        if !taken {
            mounts.push(json!({"name": volume, "mountPath": path, "readOnly": true}));
        }
    }
    c
}

fn array_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    let slot = &mut v[key];
    if !slot.is_array() {
        *slot = json!([]);
    }
    match slot {
        Value::Array(a) => a,
        _ => unreachable!("set to an array above"),
    }
}
