//! Istio's TCP metrics for opaque connections on loopback: an echo server
//! metering what it accepts (`reporter="destination"`) and a client
//! metering what it opens (`reporter="source"`): connections opened and
//! closed, bytes each way from the reporter's view, and a Telemetry
//! override turning one of them off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use mesh_test_support::telemetry::sample;
use mesh_tower::server::ConnectionInfo;
use mesh_tower::telemetry::MeteredIo;
use mesh_tower::Mesh;

const DB: &str = "db.default.svc.cluster.local";

async fn mesh(dir: &std::path::Path, yaml: &str, app: &str) -> Mesh {
    std::fs::write(dir.join("mesh.yaml"), yaml).unwrap();
    Mesh::local(dir)
        .namespace("default")
        .labels([("app", app)])
        .workload_name(format!("{app}-v1"))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_count_connections_and_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_dir = tempfile::tempdir().unwrap();
    // The client does not count bytes it received from its app.
    let client_yaml = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: TCP_RECEIVED_BYTES, mode: CLIENT}
      disabled: true
";
    let server = mesh(server_dir.path(), "", "db").await;
    let telemetry = server.telemetry().clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let conn = ConnectionInfo {
                peer_addr: peer,
                local_addr: stream.local_addr().unwrap(),
                port,
                identity: None,
                sni: None,
            };
            let meter = telemetry.tcp_inbound(&conn, Some(DB));
            tokio::spawn(async move {
                let mut io = MeteredIo::inbound(stream, meter);
                let mut buf = [0u8; 64];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => io.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
        }
    });

    let client_dir = tempfile::tempdir().unwrap();
    let client = mesh(client_dir.path(), client_yaml, "web").await;
    for _ in 0..2 {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut io = MeteredIo::outbound(stream, client.telemetry().tcp_outbound(DB));
        io.write_all(&[7u8; 100]).await.unwrap();
        let mut back = [0u8; 100];
        io.read_exact(&mut back).await.unwrap();
        io.shutdown().await.unwrap();
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
    }
    // The server's side of the second connection closes on its own task.
    let closed = |m: &Mesh| {
        sample(
            &m.metrics().render(),
            "istio_tcp_connections_closed_total",
            &[("reporter", "destination")],
        )
    };
    for _ in 0..100 {
        if closed(&server) == Some(2.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let s = server.metrics().render();
    let dest = [
        ("reporter", "destination"),
        ("destination_workload", "db-v1"),
        ("destination_service", DB),
        ("destination_service_name", "db"),
        ("request_protocol", "tcp"),
        ("connection_security_policy", "none"),
    ];
    assert_eq!(
        sample(&s, "istio_tcp_connections_opened_total", &dest),
        Some(2.0),
        "{s}"
    );
    assert_eq!(
        sample(&s, "istio_tcp_connections_closed_total", &dest),
        Some(2.0),
        "{s}"
    );
    assert_eq!(
        sample(&s, "istio_tcp_received_bytes_total", &dest),
        Some(200.0),
        "{s}"
    );
    assert_eq!(
        sample(&s, "istio_tcp_sent_bytes_total", &dest),
        Some(200.0),
        "{s}"
    );
    assert!(
        !s.contains("response_code="),
        "TCP series have no response code: {s}"
    );

    let c = client.metrics().render();
    let src = [
        ("reporter", "source"),
        ("source_workload", "web-v1"),
        ("destination_service", DB),
        ("request_protocol", "tcp"),
    ];
    assert_eq!(
        sample(&c, "istio_tcp_connections_opened_total", &src),
        Some(2.0),
        "{c}"
    );
    assert_eq!(
        sample(&c, "istio_tcp_connections_closed_total", &src),
        Some(2.0),
        "{c}"
    );
    assert_eq!(
        sample(&c, "istio_tcp_sent_bytes_total", &src),
        Some(200.0),
        "{c}"
    );
    assert_eq!(
        sample(&c, "istio_tcp_received_bytes_total", &src),
        Some(0.0),
        "turned off for clients: {c}"
    );
}
