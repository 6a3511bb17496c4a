//! Apps with no mesh code joining the mesh through `mesh-shim`: three
//! versions of a Python stdlib `http.server` app behind shims, a Python
//! client behind its own shim, and a Rust SDK workload beside them, all fed
//! by meshd over TLS (15012) with certificates from meshd's CA (bootstrap
//! tokens), and a `mesh-shim gateway` serving HTTPS into the mesh.
//!
//! What it shows, each step checked:
//! 1. a 90/10 canary split of the Python app, from the SDK workload;
//! 2. the split edited live to 50/50 with no failed request;
//! 3. a retry policy masking a backend that fails every other request;
//! 4. an authorization denial for the Python client (POST not allowed);
//! 5. the gateway serving HTTPS (curl) into the mesh over mTLS.
//!
//! The shims are real processes: the binary is found next to this
//! program's directory (`target/debug/mesh-shim`) or at `MESH_SHIM_BIN`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_core::spiffe::SpiffeId;
use mesh_tower::body;
use mesh_tower::server::TlsSource;
use mesh_tower::{Mesh, MeshClient};
use sidecar_shim::launch::{Launch, Running};

use crate::Error;

/// The Python app: serves its version at every path; with `flaky`, every
/// other request answers 503 (a bad backend the retry policy hides).
const APP: &str = r#"
import http.server, sys
version, flaky = sys.argv[2], sys.argv[3] == "flaky"
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        seen[0] += 1
        code = 503 if flaky and seen[0] % 2 == 1 else 200
        body = (version + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = answer
    do_POST = answer
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// A Python process, killed on drop.
struct Py(Child);

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn python_app(version: &str, flaky: bool) -> Result<(Py, u16), Error> {
    let port = free_port()?;
    let child = Command::new("python3")
        .args([
            "-c",
            APP,
            &port.to_string(),
            version,
            if flaky { "flaky" } else { "steady" },
        ])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("python3: {e}; the demo's legacy app is Python's http.server"))?;
    let py = Py(child);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((py, port));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("the Python app {version} did not listen on {port}").into())
}

/// The `mesh-shim` binary.
pub fn shim_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("MESH_SHIM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let found = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("mesh-shim"))
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        "mesh-shim not found next to this program: cargo build -p sidecar-shim (or set MESH_SHIM_BIN)".into()
    })
}

/// The mesh config; `weights` are v1/v2/v3 percentages.
pub fn config(inbound: [u16; 3], weights: [u32; 3], cert: &Path, key: &Path) -> String {
    let mut y = String::from(
        "apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-read-only, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
",
    );
    for (i, p) in inbound.iter().enumerate() {
        let v = i + 1;
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-v{v}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {p}}}
  labels: {{app: ratings, version: v{v}}}
  serviceAccount: ratings
---
"
        ));
    }
    let [w1, w2, w3] = weights;
    y.push_str(&format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - retries: {{attempts: 3, retryOn: 5xx}}
    route:
    - {{destination: {{host: ratings, subset: v1}}, weight: {w1}}}
    - {{destination: {{host: ratings, subset: v2}}, weight: {w2}}}
    - {{destination: {{host: ratings, subset: v3}}, weight: {w3}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ratings-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [ratings.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings-ingress, namespace: default}}
spec:
  hosts: [ratings.example.com]
  gateways: [ratings-gateway]
  http:
  - route: [{{destination: {{host: ratings, subset: v1, port: {{number: 9080}}}}}}]
",
        cert.display(),
        key.display()
    ));
    y
}

/// What the demo saw.
#[derive(Debug, Default)]
pub struct LegacyReport {
    /// Answers by version at 90/10.
    pub canary: BTreeMap<String, u32>,
    /// Answers by version while the YAML went to 50/50, and failures.
    pub during_edit: (BTreeMap<String, u32>, u32),
    /// Answers by version at 50/50.
    pub after: BTreeMap<String, u32>,
    /// Requests to the flaky v3 through retries: (succeeded, sent), and the
    /// 503s v3's shim reported.
    pub retried: (u32, u32, u64),
    /// The Python client's GET and POST statuses.
    pub python_client: (String, String),
    /// curl through the gateway.
    pub gateway: String,
}

async fn count(client: &MeshClient, n: u32) -> Result<(BTreeMap<String, u32>, u32), Error> {
    let mut seen = BTreeMap::new();
    let mut failed = 0;
    for i in 0..n {
        let req = http::Request::get(format!("http://ratings:9080/r/{i}")).body(body::empty())?;
        let resp = client.request(req).await?;
        if !resp.status().is_success() {
            failed += 1;
            continue;
        }
        let b = resp.into_body().collect().await?.to_bytes();
        *seen
            .entry(String::from_utf8_lossy(&b).trim().to_string())
            .or_insert(0) += 1;
    }
    Ok((seen, failed))
}

fn metric(exposition: &str, needles: &[&str]) -> u64 {
    exposition
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn scrape(addr: SocketAddr) -> Result<String, Error> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

fn python_client(proxy: SocketAddr, method: &str) -> Result<String, Error> {
    let script = format!(
        "import urllib.request,urllib.error,sys\nreq=urllib.request.Request('http://ratings:9080/r', method='{method}')\ntry:\n  r=urllib.request.urlopen(req, timeout=10); sys.stdout.write(str(r.status)+' '+r.read().decode().strip())\nexcept urllib.error.HTTPError as e:\n  sys.stdout.write(str(e.code))\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .env("http_proxy", format!("http://{proxy}"))
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the demo; every step's outcome is checked before the next.
pub async fn run() -> Result<LegacyReport, Error> {
    let shim = shim_binary()?;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("mesh");
    std::fs::create_dir_all(&conf)?;
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        r#"{"tokens": [
  {"token": "ratings-bootstrap", "namespace": "default", "serviceAccount": "ratings"},
  {"token": "client-bootstrap", "namespace": "default", "serviceAccount": "legacy-client"},
  {"token": "gateway-bootstrap", "namespace": "default", "serviceAccount": "ingressgateway"}
]}"#,
    )?;
    let pki = TestPki::new(dir.path())?;
    let inbound = [free_port()?, free_port()?, free_port()?];
    let file = conf.join("ratings.yaml");
    std::fs::write(&file, config(inbound, [90, 10, 0], &pki.cert, &pki.key))?;

    let mut cfg = MeshdConfig::new(&conf);
    cfg.ca_tokens = Some(tokens.clone());
    let meshd = Meshd::start(cfg).await?;
    let secure = meshd.secure_xds_addr().ok_or("meshd serves no TLS port")?;
    let root = meshd.root_cert_file();

    let token_file = |name: &str, token: &str| -> Result<PathBuf, Error> {
        let p = dir.path().join(name);
        std::fs::write(&p, token)?;
        Ok(p)
    };
    let ratings_token = token_file("ratings.token", "ratings-bootstrap")?;
    let client_token = token_file("client.token", "client-bootstrap")?;
    let gateway_token = token_file("gateway.token", "gateway-bootstrap")?;
    let identity_flags = |token: &Path| -> Vec<String> {
        vec![
            "--ca-addr".into(),
            secure.to_string(),
            "--ca-root".into(),
            root.display().to_string(),
            "--ca-server-name".into(),
            "meshd.istio-system.svc".into(),
            "--ca-token-file".into(),
            token.display().to_string(),
        ]
    };
    let loopback_ports = [
        "--outbound-port",
        "0",
        "--admin-port",
        "0",
        "--metrics-port",
        "0",
        "--ready-port",
        "0",
        "--inbound-addr",
        "127.0.0.1",
    ];

    // Three versions of the Python app, each behind its shim.
    let mut apps = Vec::new();
    let mut shims: Vec<Running> = Vec::new();
    for (i, port) in inbound.iter().enumerate() {
        let v = format!("v{}", i + 1);
        let (py, app_port) = python_app(&v, i == 2)?;
        apps.push(py);
        let running = Launch::new(format!("ratings-{v}"), &shim)
            .env("MESH_SHIM_LOG", "warn")
            .args(&[
                "--xds-addr",
                &format!("https://localhost:{}", secure.port()),
            ])
            .args(&identity_flags(&ratings_token))
            .args(&loopback_ports)
            .args(&[
                "--labels",
                &format!("app=ratings,version={v}"),
                "--service-account",
                "ratings",
                "--workload-name",
                &format!("ratings-{v}"),
                "--app-port",
                &app_port.to_string(),
                "--inbound-port",
                &port.to_string(),
            ])
            .start()?;
        shims.push(running);
    }
    // The Python client's shim: outbound only, an explicit proxy.
    let client_shim = Launch::new("legacy-client", &shim)
        .env("MESH_SHIM_LOG", "warn")
        .args(&[
            "--xds-addr",
            &format!("https://localhost:{}", secure.port()),
        ])
        .args(&identity_flags(&client_token))
        .args(&loopback_ports)
        .args(&[
            "--labels",
            "app=legacy-client",
            "--service-account",
            "legacy-client",
        ])
        .start()?;

    // The Rust SDK workload beside them (same meshd, plaintext xDS, a
    // certificate from the same CA).
    let spiffe = SpiffeId::new("cluster.local", "default", "productpage")?;
    let cert = meshd.ca().issue_local(&spiffe, &[], None)?;
    let sdk = Mesh::xds([format!("http://{}", meshd.xds_addr())])
        .namespace("default")
        .labels([("app", "productpage")])
        .service_account("productpage")
        .identity(TlsSource::fixed(cert))
        .build()
        .await?;
    let client = sdk.http_client();
    let mut report = LegacyReport::default();

    // 1. The canary split.
    let (canary, failed) = count(&client, 200).await?;
    if failed > 0 || canary.len() != 2 {
        return Err(format!("90/10: {canary:?}, {failed} failed").into());
    }
    report.canary = canary;

    // 2. Edited live, under traffic.
    let edit = {
        let (file, cert, key) = (file.clone(), pki.cert.clone(), pki.key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            std::fs::write(&file, config(inbound, [50, 50, 0], &cert, &key))
        })
    };
    report.during_edit = count(&client, 300).await?;
    edit.await??;
    let gen = meshd.generation().unwrap_or(0);
    wait_for(&meshd, gen).await;
    let (after, failed) = count(&client, 200).await?;
    if report.during_edit.1 > 0 || failed > 0 {
        return Err(format!("failures during the edit: {:?}", report.during_edit).into());
    }
    report.after = after;

    // 3. All traffic to the flaky v3: retries hide its 503s.
    std::fs::write(&file, config(inbound, [0, 0, 100], &pki.cert, &pki.key))?;
    let gen = meshd.generation().unwrap_or(0);
    wait_for(&meshd, gen).await;
    let (got, failed) = count(&client, 100).await?;
    let v3_metrics = scrape(shims[2].addr("metrics")).await?;
    let v3_503 = metric(
        &v3_metrics,
        &["reporter=\"destination\"", "response_code=\"503\""],
    );
    report.retried = (
        got.values().sum(),
        got.values().sum::<u32>() + failed,
        v3_503,
    );
    if failed > 0 || v3_503 == 0 {
        return Err(format!("retries: {:?}", report.retried).into());
    }

    // 4. The Python client: GET allowed, POST denied by the policy.
    let proxy = client_shim.addr("outbound");
    report.python_client = (python_client(proxy, "GET")?, python_client(proxy, "POST")?);
    if !report.python_client.0.starts_with("200") || report.python_client.1 != "403" {
        return Err(format!("python client: {:?}", report.python_client).into());
    }

    // 5. The gateway, HTTPS from curl into the mesh.
    let gw = Launch::new("ingressgateway", &shim)
        .env("MESH_SHIM_LOG", "warn")
        .gateway()
        .args(&["--config", &conf.display().to_string()])
        .args(&identity_flags(&gateway_token))
        .args(&[
            "--labels",
            "istio=ingressgateway",
            "--service-account",
            "ingressgateway",
            "--bind",
            "127.0.0.1",
            "--port-map",
            "443=0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
            "--ready-port",
            "0",
        ])
        .start()?;
    let port = gw.addr("gateway-443").port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &pki.ca.display().to_string(),
            "--resolve",
            &format!("ratings.example.com:{port}:127.0.0.1"),
            &format!("https://ratings.example.com:{port}/r"),
            "-w",
            " %{http_code}",
        ])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    report.gateway = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if report.gateway != "v1 200" {
        return Err(format!(
            "gateway: {} {}",
            report.gateway,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    drop((gw, client_shim, shims, apps));
    meshd.shutdown().await;
    Ok(report)
}

async fn wait_for(meshd: &MeshdHandle, after: u64) {
    for _ in 0..100 {
        if meshd.generation().unwrap_or(0) > after {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Pushes reach clients shortly after the generation moves.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A certificate for the gateway's HTTPS server (`ratings.example.com`), signed by a
/// CA of its own, as a public ingress certificate would be.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestPki {
    fn new(dir: &Path) -> Result<TestPki, Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "demo ingress CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["ratings.example.com".to_string()])?
            .signed_by(&key, &ca)?;
        let p = TestPki {
            ca: dir.join("ingress-ca.pem"),
            cert: dir.join("ingress-cert.pem"),
            key: dir.join("ingress-key.pem"),
        };
        std::fs::write(&p.ca, ca.pem())?;
        std::fs::write(&p.cert, leaf.pem())?;
        std::fs::write(&p.key, key.serialize_pem())?;
        Ok(p)
    }
}
