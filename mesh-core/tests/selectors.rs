//! One label-selector test for every caller: the same (selector, labels)
//! pairs give the same answer through security and networking workload
//! selectors, VirtualService `sourceLabels`, DestinationRule subsets, and,
//! with Kubernetes' "an empty selector selects nothing", through Service
//! selectors in the registry and the endpoints they pick.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup

use mesh_core::compile::Compiler;
use mesh_core::config::common::{selector_matches, service_selects, Labels, WorkloadSelector};
use mesh_core::config::kube::ServiceSpec;
use mesh_core::config::networking::sidecar;
use mesh_core::config::{load_str, MeshConfig};
use mesh_core::model::Client;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn yaml(l: &Labels) -> String {
    serde_json::to_string(l).unwrap()
}

/// (selector, workload labels).
fn cases() -> Vec<(Labels, Labels)> {
    let app = labels(&[("app", "a")]);
    let v1 = labels(&[("app", "a"), ("version", "v1")]);
    let v2 = labels(&[("app", "a"), ("version", "v2")]);
    vec![
        (app.clone(), v1.clone()),
        (v1.clone(), v1.clone()),
        (v2.clone(), v1.clone()),
        (app.clone(), labels(&[("app", "b")])),
        (app.clone(), Labels::new()),
        (Labels::new(), v1.clone()),
        (Labels::new(), Labels::new()),
        (v1, app),
    ]
}

/// The config for one case: Service `s` selecting the WorkloadEntry by a
/// label of its own, Service `r` selecting by `sel`, the WorkloadEntry
/// carrying `l` too, a DestinationRule subset of `s` and a VirtualService
/// `sourceLabels` match on `sel`.
fn config(sel: &Labels, l: &Labels) -> String {
    let mut we = l.clone();
    we.insert("svc".into(), "s".into());
    let (sel, we) = (yaml(sel), yaml(&we));
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: s, namespace: t}}
spec:
  selector: {{svc: s}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: r, namespace: t}}
spec:
  selector: {sel}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: we, namespace: t}}
spec:
  address: 10.0.0.1
  labels: {we}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: s, namespace: t}}
spec:
  host: s
  subsets: [{{name: sub, labels: {sel}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: s, namespace: t}}
spec:
  hosts: [s]
  http:
  - match: [{{sourceLabels: {sel}}}]
    route: [{{destination: {{host: s, subset: sub}}}}]
  - route: [{{destination: {{host: s}}}}]
"#
    )
}

#[test]
fn every_selector_caller_agrees() {
    const S: &str = "s.t.svc.cluster.local";
    const R: &str = "r.t.svc.cluster.local";
    for (sel, l) in cases() {
        let want = selector_matches(&sel, &l);
        let want_service = service_selects(&sel, &l);
        assert_eq!(want_service, want && !sel.is_empty());
        let case = format!("selector {sel:?}, labels {l:?}");

        let security = WorkloadSelector {
            match_labels: sel.clone(),
        };
        assert_eq!(security.matches(&l), want, "WorkloadSelector: {case}");
        let networking = sidecar::WorkloadSelector {
            labels: sel.clone(),
        };
        assert_eq!(networking.matches(&l), want, "Sidecar selector: {case}");
        let svc = ServiceSpec {
            selector: Some(sel.clone()),
            ..ServiceSpec::default()
        };
        assert_eq!(svc.selects(&l), want_service, "Service: {case}");

        let loaded = load_str(&config(&sel, &l), "test.yaml");
        assert!(loaded.is_ok(), "{case}: {:#?}", loaded.errors);
        let compiler = Compiler::new(loaded.resources, MeshConfig::default());
        let model = compiler.compile(&Client::new("t", l.clone()));
        let rules = model.outbound_for(S, 80).unwrap().routes.routes.len();
        assert_eq!(rules == 2, want, "VirtualService sourceLabels: {case}");
        let subset = &model.cluster_for(S, 80, Some("sub")).unwrap().endpoints;
        assert_eq!(subset.len() == 1, want, "DestinationRule subset: {case}");
        let selected = &model.cluster_for(R, 80, None).unwrap().endpoints;
        assert_eq!(
            selected.len() == 1,
            want_service,
            "Service endpoints: {case}"
        );
        let mut we = l.clone();
        we.insert("svc".into(), "s".into());
        let of_workload = compiler.registry().services_of_workload("t", &we);
        let selects_r = of_workload.into_iter().any(|s| s.hostname == R);
        assert_eq!(selects_r, want_service, "registry: {case}");
    }
}
