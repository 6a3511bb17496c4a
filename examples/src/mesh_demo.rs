//! The whole mesh on loopback, behind `examples/mesh_demo.rs`: `meshd`
//! serving Istio YAML over xDS, an SDK workload fed by it, two real
//! backends, and a rollout done by editing the YAML meshd watches.
//!
//! Unlike the canary example (local mode: the SDK compiles the YAML
//! itself), here the workload knows only meshd's address; routes, subsets
//! and endpoints arrive as Envoy v3 resources, and the edit reaches it as a
//! push that it ACKs.

use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig};
use mesh_tower::Mesh;

use crate::canary::{config, measure};
use crate::{backend, Behaviour, Error};

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
}

/// Runs meshd, the backends and the workload, and shifts 90/10 to 50/50.
pub async fn run() -> Result<DemoReport, Error> {
    let v1 = backend("v1", Behaviour::Healthy).await?;
    let v2 = backend("v2", Behaviour::Healthy).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 90))?;

    let meshd = Meshd::start(MeshdConfig::new(dir.path())).await?;
    let xds = format!("http://{}", meshd.xds_addr());
    let gen0 = meshd.generation().unwrap_or(0);

    let mesh = Mesh::xds([xds.clone()])
        .namespace("default")
        .labels([("app", "productpage")])
        .build()
        .await?;
    let client = mesh.http_client();
    let before = measure(&client, 1000).await?;

    // Edit the YAML meshd watches while traffic keeps flowing.
    let mut model = mesh.model();
    let background = {
        let client = client.clone();
        tokio::spawn(async move { measure(&client, 500).await })
    };
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 50))?;
    // xDS delivers a change one resource type at a time, and the SDK
    // applies each as it comes: wait for the new split itself, not for the
    // first model that differs.
    tokio::time::timeout(Duration::from_secs(10), async {
        while v2_weight(&model.borrow_and_update()) != Some(50) {
            model.changed().await?;
        }
        Ok::<_, tokio::sync::watch::error::RecvError>(())
    })
    .await??;
    let during = background.await??;
    let after = measure(&client, 1000).await?;
    let gen1 = meshd.generation().unwrap_or(0);

    let cache = meshd.controller().cache();
    let acked = cache
        .nodes()
        .iter()
        .flat_map(|n| cache.status(n))
        .filter_map(|(t, s)| {
            let short = t.rsplit('.').next().unwrap_or(&t).to_string();
            Some((short, s.acked?))
        })
        .collect();
    drop(mesh);
    meshd.shutdown().await;
    Ok(DemoReport {
        xds_addr: xds,
        before,
        during,
        after,
        generations: (gen0, gen1),
        acked,
    })
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
