//! meshd's HTTP port and CA on loopback: health, readiness (including a
//! start on an invalid config), Prometheus metrics, a CSR over the xDS port
//! with a bootstrap token, and the `meshd` binary with a settings file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use mesh_ca::proto::{IstioCertificateRequest, IstioCertificateServiceClient};
use mesh_ca::SpiffeId;
use mesh_control::{Meshd, MeshdConfig};

#[tokio::test]
async fn health_ready_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    let http = meshd.http_addr();
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    assert_eq!(http_get(http, "/ready").await, (200, "ready\n".to_string()));
    assert_eq!(http_get(http, "/nope").await.0, 404);

    let mut a = Ads::connect(
        meshd.xds_addr(),
        node(
            "client-a",
            "demo",
            &[("app", "client")],
            &[("ISTIO_VERSION", "1.28.0")],
        ),
    )
    .await;
    a.sync_all().await;
    // A NACK is counted and shown in syncz.
    let lds = a.last[mesh_xds::types::LISTENER].clone();
    std::fs::write(dir.path().join("web-vs.yaml"), web_vs("8s")).unwrap();
    let rds = a.recv().await;
    let mut nack = mesh_xds::pb::envoy::service::discovery::v3::DiscoveryRequest {
        type_url: rds.type_url.clone(),
        resource_names: rds_names(&lds),
        version_info: String::new(),
        response_nonce: rds.nonce.clone(),
        ..Default::default()
    };
    nack.error_detail = Some(mesh_xds::pb::google::rpc::Status {
        code: 3,
        message: "route rejected by test".into(),
        details: vec![],
    });
    a.send_raw(nack).await;

    // The NACK and the second push's timing are recorded by different
    // tasks; wait for both before reading the rest.
    eventually("the NACK and the second push in /metrics", || async move {
        let (_, text) = http_get(http, "/metrics").await;
        let m = parse_metrics(&text);
        m.get("meshd_xds_nacks_total{type=\"rds\"}").copied() == Some(1.0)
            && m.get("meshd_push_time_seconds_count")
                .is_some_and(|c| *c >= 2.0)
    })
    .await;
    let (status, text) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    assert_eq!(m["meshd_config_generations_total"], 2.0, "{text}");
    assert_eq!(m["meshd_xds_connected_streams"], 1.0);
    assert!(m["meshd_xds_pushes_total{type=\"cds\"}"] >= 1.0, "{text}");
    assert!(m["meshd_compile_time_seconds_count"] >= 2.0, "{text}");
    // A NACK answers the push too: convergence completes.
    assert!(text.contains("meshd_convergence_time_seconds_bucket"));

    // The same under istiod's names, labels and buckets, for its
    // dashboards: connected clients by version, pushes and rejects by
    // type, push and convergence times, triggers, config counts.
    assert_eq!(m["pilot_xds{version=\"1.28.0\"}"], 1.0, "{text}");
    assert!(m["pilot_xds_pushes{type=\"cds\"}"] >= 1.0, "{text}");
    assert_eq!(m["pilot_total_xds_rejects{type=\"rds\"}"], 1.0, "{text}");
    assert!(m["pilot_xds_push_time_count"] >= 2.0, "{text}");
    assert!(
        m.contains_key("pilot_xds_push_time_bucket{le=\"0.01\"}"),
        "{text}"
    );
    assert!(m.contains_key("pilot_proxy_convergence_time_bucket{le=\"0.5\"}"));
    // The NACK completes the push's convergence (checked every 5 ms).
    eventually("convergence in /metrics", || async move {
        let (_, text) = http_get(http, "/metrics").await;
        parse_metrics(&text)
            .get("pilot_proxy_convergence_time_count")
            .is_some_and(|c| *c >= 1.0)
    })
    .await;
    assert_eq!(m["pilot_push_triggers{type=\"config\"}"], 2.0, "{text}");
    assert_eq!(m["galley_validation_passed"], 2.0, "{text}");
    assert_eq!(m["galley_validation_failed"], 0.0, "{text}");
    // Two Services and a ServiceEntry host; the web VirtualService and
    // the one in services.yaml.
    assert_eq!(m["pilot_services"], 3.0, "{text}");
    assert_eq!(m["pilot_total_xds_internal_errors"], 0.0, "{text}");
    assert!(
        m["pilot_xds_config_size_bytes_bucket{le=\"10000.0\",type=\"cds\"}"] >= 1.0,
        "{text}"
    );

    let syncz = json(http, "/debug/syncz").await;
    let row = &syncz.as_array().unwrap()[0];
    assert_eq!(row["node"], "client-a");
    assert_eq!(row["namespace"], "demo");
    assert_eq!(row["types"]["CDS"]["state"], "SYNCED");
    assert_eq!(row["types"]["RDS"]["state"], "NACKED");
    assert_eq!(row["types"]["RDS"]["nack"], "route rejected by test");
    let adsz = json(http, "/debug/adsz").await;
    assert_eq!(adsz[0]["node"], "client-a");
    assert_eq!(adsz[0]["streamCount"], 1);
    meshd.shutdown().await;
}

#[tokio::test]
async fn not_ready_until_a_valid_config_arrives() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: demo}\nspec:\n  ports: [{port: 99999}]\n",
    )
    .unwrap();
    let meshd = start(dir.path()).await;
    let http = meshd.http_addr();
    let (status, body) = http_get(http, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("bad.yaml:5"), "{body}");
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
    write_config(dir.path());
    eventually("ready", || async move {
        http_get(http, "/ready").await.0 == 200
    })
    .await;
    assert_eq!(meshd.generation(), Some(1));
    meshd.shutdown().await;
}

#[tokio::test]
async fn ca_signs_a_csr_on_the_xds_port_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let ca_dir = tempfile::tempdir().unwrap();
    let tokens = ca_dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        r#"{"tokens": [{"token": "0123456789abcdef-echo", "namespace": "demo", "serviceAccount": "echo"}]}"#,
    )
    .unwrap();
    let mut c = MeshdConfig::new(dir.path());
    c.ca_dir = Some(ca_dir.path().join("ca"));
    c.ca_tokens = Some(tokens);
    let meshd = Meshd::start(c).await.unwrap();
    // The root was persisted.
    assert!(ca_dir.path().join("ca/root-cert.pem").exists());

    let id = SpiffeId::new("cluster.local", "demo", "echo").unwrap();
    let csr = mesh_ca::csr::generate(&id).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", meshd.xds_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = IstioCertificateServiceClient::new(channel);
    let req = || IstioCertificateRequest {
        csr: csr.csr_pem.clone(),
        validity_duration: 3600,
        metadata: None,
    };
    let err = client.create_certificate(req()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let mut r = tonic::Request::new(req());
    r.metadata_mut().insert(
        "authorization",
        "Bearer 0123456789abcdef-echo".parse().unwrap(),
    );
    let resp = client.create_certificate(r).await.unwrap().into_inner();
    let leaf = mesh_ca::x509::certs_from_pem(&resp.cert_chain[0], "leaf").unwrap();
    let got = mesh_ca::x509::spiffe_id(&leaf[0]).unwrap();
    assert_eq!(got.to_string(), "spiffe://cluster.local/ns/demo/sa/echo");
    // The chain ends with the root meshd serves.
    assert_eq!(
        resp.cert_chain.last().unwrap().trim(),
        meshd.root_cert_pem().trim()
    );
    meshd.shutdown().await;
}

#[test]
fn binary_reads_settings_file_and_prints_bound_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    write_config(&conf);
    std::fs::write(
        dir.path().join("meshd.yaml"),
        "config: conf\nxdsAddr: 127.0.0.1:0\nsecureXdsAddr: off\ncaDir: ca\ndebounce: 50ms\n",
    )
    .unwrap();
    // The variable wins over the settings file's `off`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--config-file")
        .arg(dir.path().join("meshd.yaml"))
        .env("MESHD_HTTP_ADDR", "127.0.0.1:0")
        .env("MESHD_SECURE_XDS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let xds = lines.next().unwrap().unwrap();
    let http = lines.next().unwrap().unwrap();
    let http_addr: std::net::SocketAddr = http.strip_prefix("http ").unwrap().parse().unwrap();
    assert!(xds.starts_with("xds 127.0.0.1:"), "{xds}");
    let tls = lines.next().unwrap().unwrap();
    assert!(tls.starts_with("xds-tls 127.0.0.1:"), "{tls}");
    let root = lines.next().unwrap().unwrap();
    let root = std::path::PathBuf::from(root.strip_prefix("root-cert ").unwrap());
    assert!(
        root.ends_with("ca/root-cert.pem") && root.exists(),
        "{}",
        root.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), http_get(http_addr, "/ready"))
            .await
            .unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ready.0, 200);
    assert!(dir.path().join("ca/root-key.pem").exists());

    // A wrong settings key is refused with the known keys listed.
    std::fs::write(dir.path().join("bad.yaml"), "confg: conf\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--config-file")
        .arg(dir.path().join("bad.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("confg") && err.contains("meshConfig"), "{err}");
}

/// meshd's `/metrics`, istiod's names included, passes Prometheus' own
/// linter (`promtool check metrics`), as a scrape by a real Prometheus
/// expects it.
#[tokio::test]
async fn metrics_pass_promtool() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    let mut a = Ads::connect(
        meshd.xds_addr(),
        node(
            "client-a",
            "demo",
            &[("app", "client")],
            &[("ISTIO_VERSION", "1.28.0")],
        ),
    )
    .await;
    a.sync_all().await;
    let (status, text) = http_get(meshd.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("pilot_xds_pushes{"), "{text}");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/test.sh installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    meshd.shutdown().await;
}
