//! `meshctl proxy-status` and `proxy-config` against a running meshd on
//! loopback, with a real ADS client connected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig};
use mesh_test_support::ads::{Address, Client};
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::google::protobuf::{value::Kind, Struct, Value};
use mesh_xds::types;
use serde_json::Value as Json;

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  selector: {app: echo}
  ports:
  - {name: grpc, port: 7070, appProtocol: grpc}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-1, namespace: demo}
spec:
  address: 10.0.0.1
  labels: {app: echo}
"#;

const ECHO: &str = "outbound|7070||echo.demo.svc.cluster.local";

fn node(id: &str) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s("demo"));
    Node {
        id: id.into(),
        metadata: Some(md),
        ..Default::default()
    }
}

async fn meshctl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(&args)
            .output()
            .expect("meshctl runs")
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_and_config_show_a_connected_client() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.yaml"), CONFIG).unwrap();
    let meshd = Meshd::start(MeshdConfig::new(dir.path())).await.unwrap();
    let http = format!("http://{}", meshd.http_addr());
    let xds = meshd.xds_addr().to_string();

    let o = meshctl(vec!["proxy-status".into(), "--meshd".into(), http.clone()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("no clients connected"), "{}", out(&o));

    // A client takes CDS and EDS, ACKs CDS, and NACKs EDS.
    let mut client = Client::connect(&Address::Tcp(meshd.xds_addr()), node("echo-client-1")).await;
    client.send(types::CLUSTER, &[], None).await;
    let cds = client.recv().await;
    client.ack(&cds, &[]).await;
    client.send(types::ENDPOINT, &[ECHO], None).await;
    let eds = client.recv().await;
    client.nack(&eds, &[ECHO], "bad endpoints").await;

    let mut table = String::new();
    for _ in 0..100 {
        let o = meshctl(vec!["proxy-status".into(), "--meshd".into(), http.clone()]).await;
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        table = String::from_utf8_lossy(&o.stdout).into_owned();
        if table.contains("NACKED") && table.contains("SYNCED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let header = table.lines().next().unwrap();
    for col in ["NODE", "NAMESPACE", "CDS", "LDS", "EDS", "RDS"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("echo-client-1"))
        .expect(&table);
    assert!(row.contains("demo"), "{row}");
    assert!(
        row.contains(&format!("SYNCED ({})", cds.version_info)),
        "{row}"
    );
    assert!(
        row.contains("NACKED") && row.contains("bad endpoints"),
        "{row}"
    );
    assert!(row.contains("NOT SENT"), "{row}");

    // proxy-config over CSDS: the cluster, ACKed, decoded in JSON.
    let o = meshctl(vec![
        "proxy-config".into(),
        "echo-client-1".into(),
        "--xds-addr".into(),
        xds.clone(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let v: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["node"], "echo-client-1");
    let res = v["resources"].as_array().unwrap();
    let cluster = res
        .iter()
        .find(|r| r["type"] == "cluster" && r["name"] == ECHO)
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(cluster["configStatus"], "SYNCED", "{cluster:#}");
    assert_eq!(cluster["version"], cds.version_info);
    assert_eq!(
        cluster["config"]["host"], "echo.demo.svc.cluster.local",
        "{cluster:#}"
    );
    let endpoint = res
        .iter()
        .find(|r| r["type"] == "endpoint")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(endpoint["configStatus"], "ERROR", "{endpoint:#}");
    assert!(endpoint["error"]["details"]
        .as_str()
        .unwrap()
        .contains("bad endpoints"));

    let o = meshctl(vec![
        "proxy-config".into(),
        "echo-client-1".into(),
        "--xds-addr".into(),
        xds.clone(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("cluster") && l.contains(ECHO) && l.contains("SYNCED")),
        "{text}"
    );

    // An unknown node is an error that says how to find the right one.
    let o = meshctl(vec![
        "proxy-config".into(),
        "nobody".into(),
        "--xds-addr".into(),
        xds,
    ])
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("proxy-status"), "{}", out(&o));
    drop(client);
    meshd.shutdown().await;
}

#[test]
fn proxy_status_says_when_meshd_is_unreachable() {
    // Bind and drop a port so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args([
            "proxy-status",
            "--meshd",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach meshd") && err.contains("--meshd"),
        "{err}"
    );
}
