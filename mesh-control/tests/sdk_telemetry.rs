//! The Telemetry API reaches SDK workloads fed by meshd: meshd on
//! loopback over a directory of Istio YAML, the real SDK (`Mesh::xds`)
//! as the workload, and `Mesh::local` over the same directory as the
//! reference. The policy each workload gets equals what local mode
//! compiles, follows edits live, survives a rejected edit, is each
//! identity's own, and never reaches Envoy or a stock gRPC client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use mesh_core::config::telemetry::IstioMetric;
use mesh_core::telemetry::TelemetryPolicy;
use mesh_tower::Mesh;
use mesh_xds::pb::envoy::config::listener::v3::Listener;
use mesh_xds::telemetry_policy::TELEMETRY_LISTENER;
use mesh_xds::types::{self, unany};

/// A Telemetry for `app: <app>` in `demo`: REQUEST_COUNT off on the client
/// side, an access log with a filter, and tracing at `sampling` percent.
fn telemetry(app: &str, sampling: u32, filter: &str) -> String {
    format!(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: {app}, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  metrics:
  - providers: [{{name: prometheus}}]
    overrides:
    - match: {{metric: REQUEST_COUNT, mode: CLIENT}}
      disabled: true
  accessLogging:
  - providers: [{{name: envoy}}]
    filter: {{expression: "{filter}"}}
  tracing:
  - randomSamplingPercentage: {sampling}
"#
    )
}

async fn sdk(meshd: &mesh_control::MeshdHandle, app: &str) -> Mesh {
    sdk_with(meshd, app, false).await
}

/// The SDK for `app`, over Delta xDS when `delta`.
async fn sdk_with(meshd: &mesh_control::MeshdHandle, app: &str, delta: bool) -> Mesh {
    Mesh::xds([format!("http://{}", meshd.xds_addr())])
        .namespace("demo")
        .labels([("app", app)])
        // The node id defaults to one per namespace and host
        // (`sidecar~127.0.0.1~workload.demo~...`): several workloads in one
        // process need their own, or meshd sees one node.
        .xds_tuning({
            let name = format!("{app}-1");
            move |c| {
                c.node.workload_name = Some(name.clone());
                c.delta = delta;
            }
        })
        .build()
        .await
        .unwrap()
}

/// What local mode compiles for `app` from the YAML in `dir`.
async fn local(dir: &Path, app: &str) -> TelemetryPolicy {
    let mesh = Mesh::local(dir)
        .namespace("demo")
        .labels([("app", app)])
        .build()
        .await
        .unwrap();
    (*mesh.current().telemetry).clone()
}

/// Waits until the SDK's policy satisfies `f`.
async fn policy_until(mesh: &Mesh, what: &str, f: impl Fn(&TelemetryPolicy) -> bool) {
    let mut rx = mesh.model();
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if f(&rx.borrow_and_update().telemetry) {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{what}: the SDK has {:?}",
        mesh.current().telemetry
    );
}

fn sampling(p: &TelemetryPolicy) -> f64 {
    p.client.tracing.random_sampling_percentage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_equals_local_mode_follows_edits_and_survives_a_rejected_one() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let file = dir.path().join("telemetry.yaml");
    std::fs::write(&file, telemetry("a", 10, "response.code >= 400")).unwrap();
    let meshd = start(dir.path()).await;
    let mesh = sdk(&meshd, "a").await;

    let got = (*mesh.current().telemetry).clone();
    assert_eq!(got, local(dir.path(), "a").await);
    assert_eq!(got.sources, ["demo/a"]);
    assert!(!got.client.metrics.records(IstioMetric::RequestCount));
    assert!(got.client.metrics.records(IstioMetric::RequestDuration));
    assert!(got.server.metrics.records(IstioMetric::RequestCount));
    assert_eq!(sampling(&got), 10.0);
    let filter = got.server.access_logs.logs[0].filter.as_ref().unwrap();
    assert_eq!(filter.source(), "response.code >= 400");

    // An edit reaches the running SDK.
    std::fs::write(&file, telemetry("a", 25, "response.code >= 500")).unwrap();
    policy_until(&mesh, "the edit", |p| sampling(p) == 25.0).await;
    assert_eq!(*mesh.current().telemetry, local(dir.path(), "a").await);

    // An expression that does not compile: meshd rejects the edit and
    // the SDK keeps serving the last good policy.
    let rejected = meshd.controller().rejections();
    let generation = meshd.generation();
    std::fs::write(&file, telemetry("a", 50, "response.code >=")).unwrap();
    let ctl = meshd.controller().clone();
    eventually("meshd rejects the file", || {
        let ctl = ctl.clone();
        async move { ctl.rejections() > rejected }
    })
    .await;
    let why = format!("{:?}", meshd.controller().rejection().unwrap());
    assert!(why.contains("telemetry.yaml"), "{why}");
    assert_eq!(meshd.generation(), generation);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = mesh.current();
    assert_eq!(sampling(&kept.telemetry), 25.0);
    assert_eq!(
        kept.telemetry.server.access_logs.logs[0]
            .filter
            .as_ref()
            .unwrap()
            .source(),
        "response.code >= 500"
    );

    // Fixed: served again. Deleted: back to the default policy.
    std::fs::write(&file, telemetry("a", 50, "response.code >= 400")).unwrap();
    policy_until(&mesh, "the fix", |p| sampling(p) == 50.0).await;
    std::fs::remove_file(&file).unwrap();
    policy_until(&mesh, "the removal", |p| p.sources.is_empty()).await;
    assert_eq!(*mesh.current().telemetry, local(dir.path(), "a").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_gets_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    std::fs::write(
        dir.path().join("telemetry.yaml"),
        format!(
            "{}---\n{}",
            telemetry("a", 10, "response.code >= 400"),
            telemetry("b", 60, "response.code == 503")
        ),
    )
    .unwrap();
    let meshd = start(dir.path()).await;
    let a = sdk(&meshd, "a").await;
    let b = sdk(&meshd, "b").await;
    let c = sdk(&meshd, "c").await;
    for (mesh, app) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert_eq!(
            *mesh.current().telemetry,
            local(dir.path(), app).await,
            "{app}"
        );
    }
    assert_eq!(sampling(&a.current().telemetry), 10.0);
    assert_eq!(sampling(&b.current().telemetry), 60.0);
    assert!(c.current().telemetry.sources.is_empty());

    // An edit of b's policy moves b only.
    let mut rx = a.model();
    rx.borrow_and_update();
    std::fs::write(
        dir.path().join("telemetry.yaml"),
        format!(
            "{}---\n{}",
            telemetry("a", 10, "response.code >= 400"),
            telemetry("b", 70, "response.code == 503")
        ),
    )
    .unwrap();
    policy_until(&b, "b's edit", |p| sampling(p) == 70.0).await;
    assert_eq!(sampling(&a.current().telemetry), 10.0);
    assert!(!rx.has_changed().unwrap(), "a was not pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_client_gets_it_and_its_edits_too() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let file = dir.path().join("telemetry.yaml");
    std::fs::write(&file, telemetry("a", 10, "response.code >= 400")).unwrap();
    let meshd = start(dir.path()).await;
    let mesh = sdk_with(&meshd, "a", true).await;
    assert_eq!(*mesh.current().telemetry, local(dir.path(), "a").await);
    std::fs::write(&file, telemetry("a", 30, "response.code >= 400")).unwrap();
    policy_until(&mesh, "the edit over Delta", |p| sampling(p) == 30.0).await;
    assert_eq!(*mesh.current().telemetry, local(dir.path(), "a").await);
}

fn listener_names(
    lds: &mesh_xds::pb::envoy::service::discovery::v3::DiscoveryResponse,
) -> Vec<String> {
    lds.resources
        .iter()
        .map(|a| unany::<Listener>(a).unwrap().name)
        .collect()
}

#[tokio::test]
async fn envoy_and_stock_grpc_clients_never_get_the_policy_listener() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    std::fs::write(
        dir.path().join("telemetry.yaml"),
        telemetry("a", 10, "response.code >= 400"),
    )
    .unwrap();
    let meshd = start(dir.path()).await;
    let labels = [("app", "a")];
    let stock = node("stock", "demo", &labels, &[("GENERATOR", "grpc")]);
    let envoy = node("envoy", "demo", &labels, &[]);
    let ours = node(
        "sdk",
        "demo",
        &labels,
        &[("GENERATOR", "grpc"), ("MESH_SDK", "true")],
    );
    let mut lds = Vec::new();
    for n in [stock, envoy, ours] {
        let mut ads = Ads::connect(meshd.xds_addr(), n).await;
        // Wildcard, as Envoy asks: the most a client can be sent.
        ads.send(types::LISTENER, &[], "", "").await;
        lds.push(listener_names(&ads.recv_ack(&[]).await));
    }
    assert!(
        !lds[0].contains(&TELEMETRY_LISTENER.to_string()),
        "{:?}",
        lds[0]
    );
    assert!(
        !lds[1].contains(&TELEMETRY_LISTENER.to_string()),
        "{:?}",
        lds[1]
    );
    assert!(
        lds[2].contains(&TELEMETRY_LISTENER.to_string()),
        "{:?}",
        lds[2]
    );
    // Otherwise the same listeners.
    let without = |v: &Vec<String>| -> Vec<String> {
        v.iter()
            .filter(|n| *n != TELEMETRY_LISTENER)
            .cloned()
            .collect()
    };
    assert_eq!(without(&lds[2]), lds[1]);

    // A stock client names its listeners: it is sent those alone.
    let mut ads = Ads::connect(
        meshd.xds_addr(),
        node("stock-named", "demo", &labels, &[("GENERATOR", "grpc")]),
    )
    .await;
    let name = "web.demo.svc.cluster.local:8080".to_string();
    ads.send(types::LISTENER, std::slice::from_ref(&name), "", "")
        .await;
    assert_eq!(listener_names(&ads.recv().await), [name]);
}
