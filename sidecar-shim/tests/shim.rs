//! `mesh-shim` end to end: a Python `http.server` app with no mesh code,
//! behind one shim, called by another over mesh mTLS, in both outbound
//! modes (per-upstream port and `HTTP_PROXY` from Python's urllib); plus
//! the lifecycle (readiness, `wait`, `/quitquitquit`, SIGTERM drain) and
//! bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{free_port, get, python_app, raw, Certs, Shim};

/// ratings (Python, behind a shim on `inbound`) in a STRICT mesh; only
/// productpage may call it, and only with GET.
fn mesh_yaml(inbound: u16) -> String {
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
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ratings, namespace: default}}
spec:
  selector: {{matchLabels: {{app: ratings}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/productpage]}}}}]
    to: [{{operation: {{methods: [GET]}}}}]
"
    )
}

struct Mesh {
    _certs: Certs,
    _config: tempfile::TempDir,
    _app: support::Proc,
    ratings: Shim,
    productpage: Shim,
    inbound: u16,
}

fn start_mesh() -> Mesh {
    let certs = Certs::new();
    let config = tempfile::tempdir().unwrap();
    let www = config.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ratings.txt"), "ratings: 5 stars\n").unwrap();
    let conf = config.path().join("mesh");
    std::fs::create_dir_all(&conf).unwrap();
    let inbound = free_port();
    std::fs::write(conf.join("mesh.yaml"), mesh_yaml(inbound)).unwrap();
    let (app, app_port) = python_app(&www);
    let conf_s = conf.to_str().unwrap().to_string();
    let ratings_certs = certs.for_sa("ratings");
    let ratings = Shim::start(
        "ratings",
        &[
            "--config",
            &conf_s,
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
    let pp_certs = certs.for_sa("productpage");
    let productpage = Shim::start(
        "productpage",
        &[
            "--config",
            &conf_s,
            "--labels",
            "app=productpage",
            "--service-account",
            "productpage",
            "--upstream",
            "0=ratings:9080",
            // One thread: the current-thread runtime path.
            "--threads",
            "1",
            "--cert-dir",
            pp_certs.to_str().unwrap(),
        ],
    );
    Mesh {
        _certs: certs,
        _config: config,
        _app: app,
        ratings,
        productpage,
        inbound,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_app_joins_the_mesh_with_no_code_change() {
    let m = start_mesh();
    // Per-upstream port: the app's client knows only 127.0.0.1:PORT.
    let up = m.productpage.addr("upstream");
    let r = get(up, &up.to_string(), "/ratings.txt").await;
    assert_eq!(r.status, 200, "{} {}", r.head, r.body);
    assert!(r.body.contains("5 stars"), "{}", r.body);

    // Explicit proxy, from Python's own urllib honouring HTTP_PROXY.
    let proxy = format!("http://{}", m.productpage.addr("outbound"));
    let out = Command::new("python3")
        .args([
            "-c",
            "import urllib.request,sys; r=urllib.request.urlopen('http://ratings:9080/ratings.txt', timeout=10); sys.stdout.write(str(r.status)+' '+r.read().decode())",
        ])
        .env("http_proxy", &proxy)
        .env("HTTP_PROXY", &proxy)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("200 ratings: 5 stars"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Authorization on the ratings side: POST is not allowed.
    let r = raw(
        up,
        "POST /ratings.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "{} {}", r.head, r.body);

    // STRICT: plaintext straight to the ratings shim is refused.
    let inbound = m.ratings.addr("inbound");
    assert_eq!(inbound.port(), m.inbound);
    let r = get(inbound, "ratings:9080", "/ratings.txt").await;
    assert_eq!(r.status, 0, "plaintext got an answer: {}", r.head);

    // Both sides report Istio's metrics: the destination saw productpage's
    // SPIFFE identity over mutual TLS.
    let metrics = get(m.ratings.addr("metrics"), "x", "/stats/prometheus").await;
    let line = metrics
        .body
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_code=\"200\"")
        })
        .unwrap_or_else(|| panic!("no destination series:\n{}", metrics.body));
    assert!(
        line.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\""),
        "{line}"
    );
    assert!(
        line.contains("connection_security_policy=\"mutual_tls\""),
        "{line}"
    );
    let metrics = get(m.productpage.addr("metrics"), "x", "/stats/prometheus").await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"ratings.default.svc.cluster.local\"")),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_readiness_wait_and_quitquitquit() {
    let mut m = start_mesh();
    let ready = m.ratings.addr("ready");
    assert_eq!(get(ready, "x", "/healthz/ready").await.status, 200);
    let admin = m.ratings.addr("admin");
    let dump = get(admin, "x", "/config_dump").await;
    assert_eq!(dump.status, 200);
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    assert_eq!(v["workload"]["labels"]["app"], "ratings");
    assert_eq!(
        v["identity"],
        serde_json::Value::Null,
        "file-mounted certs, no CA"
    );
    assert_eq!(v["local_source"]["applied"], 1);
    assert!(v["model"]["inbound"].is_object(), "{}", dump.body);

    // `/logging` changes the filter at run time and refuses nonsense.
    assert_eq!(get(admin, "x", "/logging?level=debug").await.status, 200);
    assert_eq!(get(admin, "x", "/logging?level=%3D%3D").await.status, 400);

    // `mesh-shim wait` returns at once for a ready shim ...
    let ok = Command::new(env!("CARGO_BIN_EXE_mesh-shim"))
        .args([
            "wait",
            "--url",
            &format!("http://{ready}/healthz/ready"),
            "--timeout",
            "5s",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    // ... and fails, saying why, when nothing becomes ready.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-shim"))
        .args([
            "wait",
            "--url",
            &format!("http://127.0.0.1:{}/healthz/ready", free_port()),
            "--timeout",
            "300ms",
            "--period",
            "50ms",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready after"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A GET to /quitquitquit is refused; a POST shuts the shim down.
    assert_eq!(get(admin, "x", "/quitquitquit").await.status, 405);
    let r = raw(
        admin,
        "POST /quitquitquit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let status = m.ratings.proc.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_shim_keeps_serving() {
    let certs = Certs::new();
    let conf = tempfile::tempdir().unwrap();
    let www = conf.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ok.txt"), "fine\n").unwrap();
    std::fs::create_dir_all(conf.path().join("mesh")).unwrap();
    // PERMISSIVE, so plaintext bad input reaches the HTTP server.
    let inbound = free_port();
    std::fs::write(
        conf.path().join("mesh/mesh.yaml"),
        mesh_yaml(inbound)
            .replace("mode: STRICT", "mode: PERMISSIVE")
            .replace(
                "  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]\n",
                "  - from: [{source: {notPrincipals: [nobody]}}]\n",
            ),
    )
    .unwrap();
    let (_app, app_port) = python_app(&www);
    let ratings_certs = certs.for_sa("ratings");
    let shim = Shim::start(
        "ratings",
        &[
            "--config",
            conf.path().join("mesh").to_str().unwrap(),
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
            "--header-timeout",
            "500ms",
        ],
    );
    let inb = shim.addr("inbound");
    // Malformed request line: 400, connection closed.
    let r = raw(inb, "NOT HTTP AT ALL\r\n\r\n").await;
    assert!(r.status == 400 || r.status == 0, "{}", r.head);
    // An oversized header: 431 (or closed), never a crash.
    let big = format!(
        "GET /ok.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let r = raw(inb, &big).await;
    assert!(r.status == 431 || r.status == 0, "{}", r.head);
    // Slowloris: headers never finished are cut off at the header timeout.
    let start = std::time::Instant::now();
    let r = raw(inb, "GET /ok.txt HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "slow client held the connection {:?}",
        start.elapsed()
    );
    assert!(r.status == 408 || r.status == 0, "{}", r.head);
    // A TLS client with an identity from another mesh's CA is refused.
    let other = Certs::new();
    let refused = mesh_test_support::raw_http::mtls(
        inb,
        other.cert("intruder"),
        &certs.bundle(),
        "GET /ok.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|r| r.status == 0),
        "{:?}",
        refused.map(|r| r.head)
    );
    // And the shim still serves.
    let r = get(inb, "ratings:9080", "/ok.txt").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.body.contains("fine"));
}

#[test]
fn invalid_config_and_flags_fail_the_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: default}\nspec:\n  ports: [{port: 99999}]\n",
    )
    .unwrap();
    let err = Shim::try_start("bad-config", &["--config", dir.path().to_str().unwrap()])
        .err()
        .expect("started on invalid config");
    assert!(err.contains("bad.yaml") && err.contains("port"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let err = Shim::try_start(
        "busy-port",
        &[
            "--config",
            dir.path().to_str().unwrap(),
            "--admin-port",
            &port,
        ],
    )
    .err()
    .expect("started on a busy port");
    assert!(
        err.contains("admin") && err.contains("--admin-port"),
        "{err}"
    );

    let ok_dir = tempfile::tempdir().unwrap();
    let err = Shim::try_start(
        "no-identity",
        &[
            "--config",
            ok_dir.path().to_str().unwrap(),
            "--app-port",
            "1",
        ],
    )
    .err()
    .expect("inbound without identity");
    assert!(
        err.contains("--cert-dir") && err.contains("identity"),
        "{err}"
    );
}

/// A Python app with no mesh code: `/slow` answers after 1 s; every new
/// TCP connection on `greet_port` gets a greeting first (a server-first
/// protocol, as MySQL's).
const SLOW_APP: &str = r#"
import http.server, socketserver, sys, threading, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(1)
        body = b"done\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Greet(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"5.7.0-greeting\n")
socketserver.ThreadingTCPServer.allow_reuse_address = True
g = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[2])), Greet)
threading.Thread(target=g.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn slow_app() -> (support::Proc, u16, u16) {
    let (http, greet) = (free_port(), free_port());
    let child = Command::new("python3")
        .args(["-c", SLOW_APP, &http.to_string(), &greet.to_string()])
        .spawn()
        .unwrap();
    let proc = support::Proc {
        child,
        name: "python slow app".into(),
    };
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", greet)).is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "slow app did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, http, greet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_early() {
    let certs = Certs::new();
    let conf = tempfile::tempdir().unwrap();
    let inbound = free_port();
    std::fs::write(
        conf.path().join("mesh.yaml"),
        mesh_yaml(inbound).replace("mode: STRICT", "mode: PERMISSIVE"),
    )
    .unwrap();
    let (_app, http, _) = slow_app();
    let ratings_certs = certs.for_sa("ratings");
    let mut shim = Shim::start(
        "ratings",
        &[
            "--config",
            conf.path().to_str().unwrap(),
            "--labels",
            "app=ratings",
            "--service-account",
            "ratings",
            "--app-port",
            &http.to_string(),
            "--inbound-port",
            &inbound.to_string(),
            "--cert-dir",
            ratings_certs.to_str().unwrap(),
            "--drain-timeout",
            "20s",
        ],
    );
    let inb = shim.addr("inbound");
    let cert = certs.cert("productpage");
    let bundle = certs.bundle();
    let in_flight = tokio::spawn(async move {
        mesh_test_support::raw_http::mtls(
            inb,
            cert,
            &bundle,
            "GET /slow HTTP/1.1\r\nHost: ratings:9080\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    shim.proc.terminate().unwrap();
    // Readiness turns 503 while draining.
    let ready = get(shim.addr("ready"), "x", "/healthz/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.head);
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "the request in flight was cut: {}", r.head);
    // New connections are refused once draining started.
    assert!(tokio::net::TcpStream::connect(inb).await.is_err());
    // Exits as soon as the last connection is done, long before 20 s.
    let status = shim.proc.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_server_first_port_is_proxied_as_tcp_without_waiting() {
    let certs = Certs::new();
    let conf = tempfile::tempdir().unwrap();
    let inbound = free_port();
    std::fs::write(
        conf.path().join("mesh.yaml"),
        mesh_yaml(inbound)
            .replace("name: http, port: 9080", "name: mysql, port: 3306")
            .replace("{http: ", "{mysql: ")
            .replace("    to: [{operation: {methods: [GET]}}]\n", ""),
    )
    .unwrap();
    let (_app, _, greet) = slow_app();
    let ratings_certs = certs.for_sa("ratings");
    let shim = Shim::start(
        "db",
        &[
            "--config",
            conf.path().to_str().unwrap(),
            "--labels",
            "app=ratings",
            "--service-account",
            "ratings",
            "--app-port",
            &greet.to_string(),
            "--inbound-port",
            &inbound.to_string(),
            "--cert-dir",
            ratings_certs.to_str().unwrap(),
        ],
    );
    let inb = shim.addr("inbound");
    // The client says nothing: the server speaks first, through the shim.
    let start = std::time::Instant::now();
    let r = mesh_test_support::raw_http::mtls(inb, certs.cert("productpage"), &certs.bundle(), "")
        .await
        .unwrap();
    assert_eq!(r.head.trim(), "5.7.0-greeting");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // L4 authorization: an identity the policy does not allow gets nothing.
    let r =
        mesh_test_support::raw_http::mtls(inb, certs.cert("intruder"), &certs.bundle(), "").await;
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| r.head.is_empty()),
        "{:?}",
        r.map(|r| r.head)
    );
    // TCP metrics on the destination side.
    let m = get(shim.addr("metrics"), "x", "/stats/prometheus").await;
    assert!(
        m.body
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")),
        "{}",
        m.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_tls_the_app_originates_to_a_service_entry() {
    // An HTTPS server outside the mesh, named by a ServiceEntry.
    let pki = mesh_test_support::tls::ExtPki::new("external CA");
    let (cert, key) = pki.leaf(&["secure.example.com"]);
    let (backend, _seen) = mesh_test_support::tls::tls_server(&cert, &key, None, "external").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        mesh_test_support::configs::service_entry(
            "secure.example.com",
            8443,
            backend.port(),
            "MESH_EXTERNAL",
            "",
        ),
    )
    .unwrap();
    let shim = Shim::start(
        "client",
        &[
            "--config",
            dir.path().to_str().unwrap(),
            "--labels",
            "app=client",
        ],
    );
    let proxy = format!("http://{}", shim.addr("outbound"));
    // curl speaks TLS itself, end to end, through `CONNECT`.
    let curl = |url: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                ca.to_str().unwrap(),
                "-x",
                &proxy,
                url,
                "-w",
                " %{http_code}",
            ])
            .output()
            .expect("curl must be on PATH")
    };
    let out = curl("https://secure.example.com:8443/x");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("tls-ok") && body.ends_with(" 200"),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Metered as TCP to the ServiceEntry host.
    let m = get(shim.addr("metrics"), "x", "/stats/prometheus").await;
    assert!(
        m.body
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"secure.example.com\"")),
        "{}",
        m.body
    );
    // Nothing listens for this name: the tunnel is refused with 503, and
    // curl says the proxy refused.
    let out = curl("https://nowhere.invalid:8443/x");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
