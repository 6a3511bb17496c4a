//! One demo workload as Istio users know a pod: an SDK mesh fed by meshd
//! (`Mesh::xds`) with its app/version labels, workload name, service
//! account and a certificate from meshd's CA, plus a metrics port serving
//! its registry at `/stats/prometheus` (Istio's merged-metrics path, so a
//! Prometheus scrape config written for sidecars finds it).
//!
//! The reviews versions also serve their app through the SDK's inbound
//! stack (`mesh.server(..)`): mTLS, authorization and `reporter="destination"`
//! telemetry in front of a handler that answers with its version.
//!
//! Not here: the config the workloads are fed, and the traffic (see the
//! parent module).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use mesh_control::MeshdHandle;
use mesh_core::spiffe::SpiffeId;
use mesh_tower::body::{full, MeshBody};
use mesh_tower::server::TlsSource;
use mesh_tower::telemetry::MeshMetrics;
use mesh_tower::Mesh;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Error;

/// The namespace every demo workload runs in.
pub const NAMESPACE: &str = "default";

/// Who a workload is: what its pod labels and Deployment would say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The workload (Deployment) name: `source_workload` /
    /// `destination_workload`.
    pub name: &'static str,
    /// The `app` label (canonical service).
    pub app: &'static str,
    /// The `version` label (canonical revision).
    pub version: &'static str,
}

/// A running demo workload. Dropping it stops its servers.
pub struct Workload {
    /// Who it is.
    pub id: Identity,
    /// Its mesh: clients, server stack and metrics registry.
    pub mesh: Mesh,
    /// Where its `/stats/prometheus` is served.
    pub metrics_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts the workload `id` against meshd: a mesh identity signed by
    /// meshd's CA (service account = the app, as in Bookinfo), the model
    /// over xDS, and the metrics port.
    ///
    /// No `inbound_ports(..)`: the apps listen on ephemeral ports that no
    /// Service names (the WorkloadEntries map `http` to them), so meshd
    /// has no server listener by those names to answer with; it sends the
    /// workload's server listeners (port 9080) unasked, and the default
    /// policy (PERMISSIVE, no authorization) is what the apps serve under.
    pub async fn start(meshd: &MeshdHandle, id: Identity) -> Result<Workload, Error> {
        // meshd's CA signs in-process here; a workload in another process
        // would send a CSR to it instead (`MeshBuilder::ca`).
        let spiffe = SpiffeId::new("cluster.local", NAMESPACE, id.app)?;
        let cert = meshd.ca().issue_local(&spiffe, &[], None)?;
        let mesh = Mesh::xds([format!("http://{}", meshd.xds_addr())])
            .namespace(NAMESPACE)
            .labels([("app", id.app), ("version", id.version)])
            .workload_name(id.name)
            .service_account(id.app)
            .identity(TlsSource::fixed(cert))
            .build()
            .await?;
        let (metrics_addr, task) = serve_metrics(mesh.metrics().clone()).await?;
        Ok(Workload {
            id,
            mesh,
            metrics_addr,
            tasks: vec![task],
        })
    }

    /// Serves the reviews app of this workload on `listener` behind the
    /// SDK's inbound stack, failing requests as `faults` says.
    pub fn serve_reviews(&mut self, listener: TcpListener, faults: Faults) -> Result<(), Error> {
        let tls = self
            .mesh
            .tls_source()
            .ok_or("the workload has no identity to serve mTLS with")?;
        let version = self.id.version;
        let app = tower::service_fn(move |_req: Request<MeshBody>| {
            let status = faults.answer();
            let mut resp = Response::new(full(version));
            *resp.status_mut() = status;
            std::future::ready(Ok::<_, Infallible>(resp))
        });
        let server = self.mesh.server(tls);
        self.tasks.push(tokio::spawn(async move {
            let _ = server.serve(listener, app).await;
        }));
        Ok(())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A switch that makes a reviews version fail a share of its requests
/// with 503 (a bad rollout), so error-rate queries have something to show.
/// Clones share the switch.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    on: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
}

impl Faults {
    /// While on, one request in [`Faults::EVERY`] fails.
    pub const EVERY: u64 = 4;

    /// Turns the failures on or off; counting starts again, so of the
    /// next `n` requests exactly `n / EVERY` fail.
    pub fn set(&self, on: bool) {
        self.seen.store(0, Ordering::Relaxed);
        self.on.store(on, Ordering::Relaxed);
    }

    /// The status the next request gets. Counted, not drawn, so the
    /// demo's error share is exact.
    fn answer(&self) -> StatusCode {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if self.on.load(Ordering::Relaxed) && n % Self::EVERY == Self::EVERY - 1 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
}

/// Serves `metrics` at `/stats/prometheus` on an ephemeral loopback port (what
/// Istio's sidecar does on 15020); any other path is 404.
pub async fn serve_metrics(metrics: MeshMetrics) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, metrics.serve(listener)))
}
