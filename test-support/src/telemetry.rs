//! Two SDK workloads talking mesh mTLS on loopback, for telemetry tests:
//! `productpage-v1` (client) calling `reviews-v2` (server) at
//! `reviews.default.svc.cluster.local:9080`, both in local mode on the
//! same YAML (plus what a test adds: Telemetry resources, a MeshConfig).
//! The server answers `/fail` with 503 and everything else with 200 and
//! a body naming the trace headers it got; and [`sample`] reads one
//! series from an exposition.

use std::convert::Infallible;
use std::path::PathBuf;

use http::{Request, Response};
use mesh_tower::body::{full, MeshBody};
use mesh_tower::server::TlsSource;
use mesh_tower::Mesh;
use tokio::net::TcpListener;

use crate::configs::service_entry;
use crate::identity::{ca_in, issue, TD};

/// The server's host.
pub const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// Both workloads, running.
pub struct Pair {
    /// The client workload (`productpage-v1`).
    pub client: Mesh,
    /// The server workload (`reviews-v2`).
    pub server: Mesh,
    /// The config directory both read (write more YAML here to change it).
    pub dir: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

async fn app(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let body = format!(
        "leaked={} traceparent={} x-request-id={}",
        req.headers().contains_key("x-envoy-peer-metadata"),
        h("traceparent"),
        h("x-request-id"),
    );
    let mut resp = Response::new(full(body));
    if req.uri().path() == "/fail" {
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(resp)
}

impl Pair {
    /// Starts both, with `extra` YAML beside the service and, when given,
    /// `mesh_config` as the MeshConfig file.
    pub async fn start(extra: &str, mesh_config: Option<&str>) -> Pair {
        let pki = tempfile::tempdir().unwrap();
        let ca = ca_in(pki.path(), TD);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let yaml = service_entry(
            REVIEWS,
            9080,
            port,
            "MESH_INTERNAL",
            "    labels: {security.istio.io/tlsMode: istio}\n    serviceAccount: reviews\n",
        );
        let cfg = tempfile::tempdir().unwrap();
        let meta = tempfile::tempdir().unwrap();
        std::fs::write(cfg.path().join("mesh.yaml"), format!("{yaml}{extra}")).unwrap();
        let mesh_config = mesh_config.map(|m| {
            let p = meta.path().join("mesh-config.yaml");
            std::fs::write(&p, m).unwrap();
            p
        });
        let build = |name: &'static str, app: &'static str, version: &'static str| {
            let mut b = Mesh::local(cfg.path())
                .namespace("default")
                .labels([("app", app), ("version", version)])
                .workload_name(name)
                .service_account(app)
                .poll_interval(std::time::Duration::from_millis(50))
                .identity(TlsSource::fixed(issue(&ca, app)));
            if let Some(m) = &mesh_config {
                b = b.mesh_config(m);
            }
            b.build()
        };
        let server = build("reviews-v2", "reviews", "v2").await.unwrap();
        let served = server.server(server.tls_source().unwrap());
        tokio::spawn(served.serve(listener, tower::service_fn(app)));
        let client = build("productpage-v1", "productpage", "v1").await.unwrap();
        Pair {
            client,
            server,
            dir: cfg.path().to_path_buf(),
            _dirs: vec![pki, cfg, meta],
        }
    }

    /// GET `path` on the server through the client: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let (status, _flags, body) = crate::sdk::get(
            &self.client.http_client(),
            &format!("http://{REVIEWS}:9080{path}"),
        )
        .await;
        (status, body)
    }
}

/// The value of the series of `metric` whose labels contain every one of
/// `labels`, from a classic text exposition.
pub fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
