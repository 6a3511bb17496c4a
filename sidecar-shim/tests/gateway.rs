//! `mesh-shim gateway` as the ingress of a mesh whose app is Python's
//! `http.server` behind a `mesh-shim` sidecar: a client outside the mesh
//! reaches it over HTTPS (SIMPLE, a certificate from files) through the
//! gateway, which calls the sidecar over mesh mTLS; plain HTTP on the
//! same host is redirected to HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use mesh_test_support::tls::ExtPki;
use sidecar_shim::launch::Launch;
use support::{free_port, get, python_app, Certs, Shim};

fn config(inbound: u16, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: default}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {inbound}}}
  labels: {{app: ratings}}
  serviceAccount: ratings
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [bookinfo.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [bookinfo.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{uri: {{prefix: /ratings}}}}]
    route: [{{destination: {{host: ratings, port: {{number: 9080}}}}}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https_into_the_mesh() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ratings.txt"), "ratings: 5 stars\n").unwrap();
    let pki = ExtPki::new("example CA");
    let (ca, cert, key) = pki.write(dir.path(), "bookinfo", &["bookinfo.example.com"]);
    let conf = dir.path().join("mesh");
    std::fs::create_dir_all(&conf).unwrap();
    let inbound = free_port();
    std::fs::write(
        conf.join("mesh.yaml"),
        config(inbound, cert.to_str().unwrap(), key.to_str().unwrap()),
    )
    .unwrap();
    let conf = conf.to_str().unwrap().to_string();
    let (_app, app_port) = python_app(&www);
    let ratings_certs = certs.for_sa("ratings");
    let _ratings = Shim::start(
        "ratings",
        &[
            "--config",
            &conf,
            "--labels",
            "app=ratings",
            "--service-account",
            "ratings",
            "--app-port",
            &app_port.to_string(),
            "--inbound-port",
            &inbound.to_string(),
            "--cert-dir",
            ratings_certs.to_str().unwrap(),
        ],
    );
    let gw_certs = certs.for_sa("ingressgateway");
    let gw = Launch::new("gateway", env!("CARGO_BIN_EXE_mesh-shim"))
        .gateway()
        .args(&[
            "--config",
            &conf,
            "--namespace",
            "default",
            "--labels",
            "istio=ingressgateway",
            "--service-account",
            "ingressgateway",
            "--cert-dir",
            gw_certs.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port-map",
            "80=0,443=0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
            "--ready-port",
            "0",
        ])
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let https = gw.addr("gateway-443");
    let http = gw.addr("gateway-80");

    // HTTPS with SNI bookinfo.example.com, verified against the example CA,
    // from curl (a client that knows nothing of the mesh).
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &format!("bookinfo.example.com:{}:127.0.0.1", https.port()),
            &format!("https://bookinfo.example.com:{}/ratings.txt", https.port()),
            "-w",
            " %{http_code}",
        ])
        .output()
        .expect("curl must be on PATH");
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        body,
        "ratings: 5 stars\n 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Plain HTTP is redirected to HTTPS; an unknown host is not served.
    let r = get(http, "bookinfo.example.com", "/ratings.txt").await;
    assert_eq!(r.status, 301, "{}", r.head);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("location: https://bookinfo.example.com/ratings.txt"),
        "{}",
        r.head
    );
    let r = get(http, "other.example.com", "/ratings.txt").await;
    assert_eq!(r.status, 404, "{}", r.head);

    // The gateway reached the sidecar over mesh mTLS as itself.
    let metrics = get(gw.addr("metrics"), "x", "/stats/prometheus").await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"ratings.default.svc.cluster.local\"")
                && l.contains("response_code=\"200\"")),
        "{}",
        metrics.body
    );
}

#[test]
fn a_gateway_needs_local_config_and_says_so() {
    let err = Launch::new("gw-xds", env!("CARGO_BIN_EXE_mesh-shim"))
        .gateway()
        .args(&[
            "--xds-addr",
            "127.0.0.1:1",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
            "--ready-port",
            "0",
        ])
        .start()
        .expect_err("a gateway started from xDS");
    assert!(err.contains("--config"), "{err}");
}
