//! The whole mesh on loopback, behind `examples/mesh_demo.rs`: `meshd`
//! serving Istio YAML over xDS, three SDK workloads fed by it (the
//! productpage client and the reviews v1/v2 servers), a rollout done by
//! editing the YAML meshd watches, then a bad v2 that fails a share of
//! its requests, and what each workload's Istio metrics say about it all.
//!
//! Unlike the canary example (local mode: the SDK compiles the YAML
//! itself), here each workload knows only meshd's address; routes, subsets
//! and endpoints arrive as Envoy v3 resources, and the edit reaches them
//! as a push they ACK. Every workload has a meshd-signed identity, so
//! productpage calls reviews over mesh mTLS, and serves its metrics at
//! `/stats/prometheus` as a sidecar would, for Prometheus, Kiali and the
//! Istio dashboards (`examples/tests/prometheus.rs` runs them).
//!
//! - [`workload`]: one workload (mesh, identity, metrics port, app);
//! - [`summary`]: requests per edge and code, read from the expositions.

pub mod summary;
pub mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::BodyExt;
use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_tower::{body, MeshClient};
use tokio::net::TcpListener;

use crate::canary::measure;
use crate::Error;
pub use summary::EdgeCount;
pub use workload::{Faults, Identity, Workload, NAMESPACE};

/// The client workload.
pub const PRODUCTPAGE: Identity = Identity {
    name: "productpage-v1",
    app: "productpage",
    version: "v1",
};

/// The reviews workloads, v1 then v2.
pub const REVIEWS: [Identity; 2] = [
    Identity {
        name: "reviews-v1",
        app: "reviews",
        version: "v1",
    },
    Identity {
        name: "reviews-v2",
        app: "reviews",
        version: "v2",
    },
];

/// What the demo observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// meshd's xDS address.
    pub xds_addr: String,
    /// (v1, v2) of 1000 requests at 90/10.
    pub before: (u32, u32),
    /// (v1, v2) of 500 requests sent while the YAML was edited; all succeeded.
    pub during: (u32, u32),
    /// (v1, v2) of 1000 requests at 50/50.
    pub after: (u32, u32),
    /// meshd's config generations: at start and after the edit.
    pub generations: (u64, u64),
    /// Per xDS type, the version the workload ACKed last (from meshd's view).
    pub acked: Vec<(String, String)>,
    /// 200 requests at 50/50 while v2 fails one in [`Faults::EVERY`]:
    /// answers counted by (body, status).
    pub degraded: BTreeMap<(String, u16), u32>,
    /// Each workload and where its `/stats/prometheus` was served.
    pub metrics: Vec<(String, SocketAddr)>,
    /// `istio_requests_total` per edge and code, from both reporters.
    pub telemetry: Vec<EdgeCount>,
}

/// The running demo: meshd, the workloads and the YAML meshd watches.
pub struct Demo {
    meshd: MeshdHandle,
    /// The client workload.
    pub productpage: Workload,
    /// reviews v1 and v2.
    pub reviews: [Workload; 2],
    /// The v2 failure switch.
    pub v2_faults: Faults,
    file: PathBuf,
    ports: (u16, u16),
    // Holds the YAML directory for as long as meshd watches it.
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts meshd at 90/10 and the three workloads, each with its
    /// metrics port; the reviews apps serve through the SDK's server stack.
    pub async fn start() -> Result<Demo, Error> {
        let l1 = TcpListener::bind("127.0.0.1:0").await?;
        let l2 = TcpListener::bind("127.0.0.1:0").await?;
        let ports = (l1.local_addr()?.port(), l2.local_addr()?.port());
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("reviews.yaml");
        std::fs::write(&file, config(ports, 90))?;
        let meshd = Meshd::start(MeshdConfig::new(dir.path())).await?;

        let v2_faults = Faults::default();
        let mut v1 = Workload::start(&meshd, REVIEWS[0]).await?;
        v1.serve_reviews(l1, Faults::default())?;
        let mut v2 = Workload::start(&meshd, REVIEWS[1]).await?;
        v2.serve_reviews(l2, v2_faults.clone())?;
        let productpage = Workload::start(&meshd, PRODUCTPAGE).await?;
        Ok(Demo {
            meshd,
            productpage,
            reviews: [v1, v2],
            v2_faults,
            file,
            ports,
            _dir: dir,
        })
    }

    /// productpage's outbound client.
    pub fn client(&self) -> MeshClient {
        self.productpage.mesh.http_client()
    }

    /// Every workload's name and metrics address, productpage first.
    pub fn metrics_targets(&self) -> Vec<(String, SocketAddr)> {
        std::iter::once(&self.productpage)
            .chain(&self.reviews)
            .map(|w| (w.id.name.to_string(), w.metrics_addr))
            .collect()
    }

    /// 1000 requests at 90/10, the edit to 50/50 under 500 more, then
    /// 1000 at 50/50: (v1, v2) per phase; any failure is an error.
    pub async fn rollout(&self) -> Result<[(u32, u32); 3], Error> {
        let client = self.client();
        let before = measure(&client, 1000).await?;
        // Edit the YAML meshd watches while traffic keeps flowing.
        let mut model = self.productpage.mesh.model();
        let background = {
            let client = client.clone();
            tokio::spawn(async move { measure(&client, 500).await })
        };
        std::fs::write(&self.file, config(self.ports, 50))?;
        // xDS delivers a change one resource type at a time, and the SDK
        // applies each as it comes: wait for the new split itself, not for
        // the first model that differs.
        tokio::time::timeout(Duration::from_secs(10), async {
            while v2_weight(&model.borrow_and_update()) != Some(50) {
                model.changed().await?;
            }
            Ok::<_, tokio::sync::watch::error::RecvError>(())
        })
        .await??;
        let during = background.await??;
        let after = measure(&client, 1000).await?;
        Ok([before, during, after])
    }

    /// The workloads' expositions, productpage first.
    pub fn expositions(&self) -> Vec<String> {
        std::iter::once(&self.productpage)
            .chain(&self.reviews)
            .map(|w| w.mesh.metrics().render())
            .collect()
    }

    /// `istio_requests_total` per edge and code. The server records a
    /// request when its response body ends, a moment after the client
    /// may have read it; wait (briefly) for both ends to agree.
    pub async fn telemetry(&self) -> Vec<EdgeCount> {
        let mut edges = summary::edges(self.expositions().iter().map(String::as_str));
        for _ in 0..100 {
            if edges.iter().all(|e| e.by_source == e.by_destination) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            edges = summary::edges(self.expositions().iter().map(String::as_str));
        }
        edges
    }

    /// Stops meshd; the workloads stop when the demo is dropped.
    pub async fn shutdown(self) {
        let Demo { meshd, .. } = self;
        meshd.shutdown().await;
    }
}

/// Sends `n` requests to reviews and counts answers by (body, status).
pub async fn exercise(client: &MeshClient, n: u32) -> Result<BTreeMap<(String, u16), u32>, Error> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let req =
            http::Request::get(format!("http://reviews:9080/reviews/{i}")).body(body::empty())?;
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        *seen
            .entry((String::from_utf8_lossy(&body).into_owned(), status))
            .or_insert(0) += 1;
    }
    Ok(seen)
}

/// Runs the whole demo: start, roll out 90/10 -> 50/50, let v2 fail a
/// share of its requests, read the telemetry back, stop.
pub async fn run() -> Result<DemoReport, Error> {
    let demo = Demo::start().await?;
    let gen0 = demo.meshd.generation().unwrap_or(0);
    let [before, during, after] = demo.rollout().await?;
    let gen1 = demo.meshd.generation().unwrap_or(0);

    demo.v2_faults.set(true);
    let degraded = exercise(&demo.client(), 200).await?;
    let telemetry = demo.telemetry().await;

    let cache = demo.meshd.controller().cache();
    let acked = cache
        .nodes()
        .iter()
        .filter(|n| n.contains(PRODUCTPAGE.app))
        .flat_map(|n| cache.status(n))
        .filter_map(|(t, s)| {
            let short = t.rsplit('.').next().unwrap_or(&t).to_string();
            Some((short, s.acked?))
        })
        .collect();
    let report = DemoReport {
        xds_addr: format!("http://{}", demo.meshd.xds_addr()),
        before,
        during,
        after,
        generations: (gen0, gen1),
        acked,
        degraded,
        metrics: demo.metrics_targets(),
        telemetry,
    };
    demo.shutdown().await;
    Ok(report)
}

/// The mesh config: the reviews Service, its two versions as
/// WorkloadEntries (with their service account, so productpage verifies
/// whom it reaches over mTLS), subsets, and `v1_weight`% to v1.
pub fn config(ports: (u16, u16), v1_weight: u32) -> String {
    let v2_weight = 100 - v1_weight;
    let (p1, p2) = ports;
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {p1}}}
  labels: {{app: reviews, version: v1}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {p2}}}
  labels: {{app: reviews, version: v2}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2_weight}
"
    )
}

/// The weight of the `v2` subset on the reviews route, as the model has it.
fn v2_weight(model: &mesh_core::model::Model) -> Option<u32> {
    model.outbound.values().find_map(|svc| {
        svc.routes.routes.iter().find_map(|r| match &r.action {
            mesh_core::route::Action::Forward(w) => w
                .destinations
                .iter()
                .find(|d| d.subset.as_deref() == Some("v2"))
                .map(|d| d.weight),
            _ => None,
        })
    })
}
