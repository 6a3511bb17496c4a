//! `meshctl install` reads back as what it meant to write: every object
//! present once, CRDs Kubernetes' typed API accepts key for key, RBAC no
//! wider than meshd's needs, and meshd run with flags it has.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mesh_core::config::yaml::parse_documents;
use serde_json::{json, Value};

use super::*;

fn parsed(text: &str) -> Vec<Value> {
    let (docs, err) = parse_documents(text);
    assert!(err.is_none(), "{err:?}");
    docs.into_iter().map(|d| d.value).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind}/{name}");
    found[0]
}

/// Equal, with numbers compared as numbers (`0` is `0.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn render_reads_back_as_every_object_in_apply_order() {
    let opts = InstallOptions::default();
    let objects = parsed(&render(&opts));
    // The YAML says exactly what the values say.
    assert!(same(
        &Value::Array(objects.clone()),
        &Value::Array(super::objects(&opts))
    ));
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let mut expected = vec!["CustomResourceDefinition"; 10];
    expected.extend([
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ]);
    assert_eq!(kinds, expected);
    for o in &objects {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "meshd"
        );
    }
    let crd_names: BTreeSet<&str> = objects[..10]
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for name in [
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "gateways.networking.istio.io",
        "serviceentries.networking.istio.io",
        "workloadentries.networking.istio.io",
        "sidecars.networking.istio.io",
        "peerauthentications.security.istio.io",
        "requestauthentications.security.istio.io",
        "authorizationpolicies.security.istio.io",
        "telemetries.telemetry.istio.io",
    ] {
        assert!(crd_names.contains(name), "{name}");
    }
    find(&objects, "Namespace", "istio-system");
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert_eq!(
            find(&objects, kind, "meshd")["metadata"]["namespace"],
            "istio-system"
        );
    }
}

#[test]
fn crds_only_and_output_files() {
    let opts = InstallOptions {
        crds_only: true,
        ..InstallOptions::default()
    };
    let objects = parsed(&render(&opts));
    assert_eq!(objects.len(), 10);
    assert!(objects
        .iter()
        .all(|o| o["kind"] == "CustomResourceDefinition"));
    let files = render_files(&opts);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "crds.yaml");
    let all = render_files(&InstallOptions::default());
    let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["crds.yaml", "meshd.yaml"]);
    assert_eq!(parsed(&all[1].1).len(), 8);
}

#[test]
fn crds_are_apiextensions_v1_key_for_key() {
    // Kubernetes' typed CRD drops keys it does not know; a CRD that reads
    // back the same has none the API server would reject in strict mode.
    for crd in crds() {
        let typed: Result<CustomResourceDefinition, _> = serde_json::from_value(crd.clone());
        assert!(typed.is_ok(), "{}: {typed:?}", crd["metadata"]["name"]);
        let back = typed.map(|t| serde_json::to_value(t).unwrap_or_default());
        let back = back.unwrap_or_default();
        assert!(
            same(&back, &crd),
            "{} changed on the way through the typed API",
            crd["metadata"]["name"]
        );
        for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let problems = mesh_core::crd::structural::check(&v["schema"]["openAPIV3Schema"]);
            assert!(problems.is_empty(), "{problems:#?}");
        }
    }
}

/// (apiGroup, resource, verbs) of every rule, one row per resource.
fn grants(rules: &Value) -> BTreeSet<(String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for r in rules.as_array().into_iter().flatten() {
        assert!(r.get("resourceNames").is_none());
        assert!(r.get("nonResourceURLs").is_none());
        let groups = r["apiGroups"].as_array().cloned().unwrap_or_default();
        assert_eq!(groups.len(), 1, "one group per rule: {r}");
        let verbs: Vec<String> = r["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        for res in r["resources"].as_array().into_iter().flatten() {
            out.insert((
                groups[0].as_str().unwrap_or_default().to_string(),
                res.as_str().unwrap_or_default().to_string(),
                verbs.clone(),
            ));
        }
    }
    out
}

fn row(group: &str, resource: &str, verbs: &[&str]) -> (String, String, Vec<String>) {
    (
        group.to_string(),
        resource.to_string(),
        verbs.iter().map(|v| v.to_string()).collect(),
    )
}

#[test]
fn cluster_role_is_exactly_what_meshd_needs() {
    let objects = parsed(&render(&InstallOptions::default()));
    let cr = find(&objects, "ClusterRole", "meshd");
    let got = grants(&cr["rules"]);
    let read = ["get", "list", "watch"];
    let status = ["update", "patch"];
    let own = ["get", "create", "update"];
    let mut want = BTreeSet::new();
    for (group, plurals) in [
        (
            "networking.istio.io",
            &[
                "virtualservices",
                "destinationrules",
                "gateways",
                "serviceentries",
                "workloadentries",
                "sidecars",
            ][..],
        ),
        (
            "security.istio.io",
            &[
                "peerauthentications",
                "requestauthentications",
                "authorizationpolicies",
            ][..],
        ),
        ("telemetry.istio.io", &["telemetries"][..]),
    ] {
        for p in plurals {
            want.insert(row(group, p, &read));
            want.insert(row(group, &format!("{p}/status"), &status));
        }
    }
    for p in ["services", "pods", "nodes", "namespaces"] {
        want.insert(row("", p, &read));
    }
    want.insert(row("discovery.k8s.io", "endpointslices", &read));
    want.insert(row("authentication.k8s.io", "tokenreviews", &["create"]));
    want.insert(row("", "configmaps", &rbac::PUBLISH));
    assert_eq!(got, want);
    // Nothing broad, nothing destructive, no secrets cluster-wide.
    for (_, res, verbs) in &got {
        assert_ne!(res, "*");
        assert_ne!(res, "secrets");
        assert!(!verbs
            .iter()
            .any(|v| v == "*" || v == "delete" || v == "deletecollection"));
    }
    let role = find(&objects, "Role", "meshd");
    let want_ns: BTreeSet<_> = [
        row("coordination.k8s.io", "leases", &own),
        row("", "secrets", &own),
    ]
    .into();
    assert_eq!(grants(&role["rules"]), want_ns);
    for binding in [
        find(&objects, "ClusterRoleBinding", "meshd"),
        find(&objects, "RoleBinding", "meshd"),
    ] {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "meshd", "namespace": "istio-system"}])
        );
    }
    assert_eq!(
        find(&objects, "ClusterRoleBinding", "meshd")["roleRef"]["kind"],
        "ClusterRole"
    );
    assert_eq!(
        find(&objects, "RoleBinding", "meshd")["roleRef"]["kind"],
        "Role"
    );
}

#[test]
fn deployment_and_service_follow_the_options() {
    let opts = InstallOptions {
        namespace: "mesh".into(),
        image: "registry.example/meshd:1.2".into(),
        replicas: 3,
        crds_only: false,
    };
    let objects = parsed(&render(&opts));
    find(&objects, "Namespace", "mesh");
    let d = find(&objects, "Deployment", "meshd");
    assert_eq!(d["metadata"]["namespace"], "mesh");
    assert_eq!(d["spec"]["replicas"], 3);
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["app"], "meshd");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"app": "meshd"})
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "meshd");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/meshd:1.2");
    assert_eq!(
        c["args"],
        json!([
            "--source",
            "kubernetes",
            "--xds-addr",
            "0.0.0.0:15010",
            "--secure-xds-addr",
            "0.0.0.0:15012",
            "--http-addr",
            "0.0.0.0:15014",
            "--webhook-addr",
            "0.0.0.0:15017"
        ])
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": 15014})
    );
    let s = find(&objects, "Service", "meshd");
    assert_eq!(s["metadata"]["namespace"], "mesh");
    let ports: Vec<(String, i64, i64)> = s["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["port"].as_i64().unwrap_or_default(),
                p["targetPort"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc-xds".to_string(), 15010, 15010),
            ("https-dns".to_string(), 15012, 15012),
            ("http-monitoring".to_string(), 15014, 15014),
            ("https-webhook".to_string(), 443, 15017),
        ]
    );
    assert_eq!(s["spec"]["selector"], json!({"app": "meshd"}));
    let binding = find(&objects, "RoleBinding", "meshd");
    assert_eq!(binding["subjects"][0]["namespace"], "mesh");
}

#[test]
fn meshd_has_every_flag_the_deployment_passes() {
    // meshd's flags are clap fields of its binary; a renamed flag would
    // leave the Deployment crash-looping, so hold the two together.
    let src = include_str!("../../../mesh-control/src/bin/meshd.rs");
    for flag in workload::meshd_args()
        .iter()
        .filter(|a| a.starts_with("--"))
    {
        let field = format!("    {}: ", flag.trim_start_matches("--").replace('-', "_"));
        assert!(src.contains(&field), "meshd has no {flag}");
    }
    assert!(src.contains(r#""kubernetes""#));
}
