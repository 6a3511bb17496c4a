//! The canary rollout flow behind `examples/canary.rs`: two real backends,
//! a watched config directory, a 90/10 split edited to 50/50 while requests
//! flow.

use std::time::Duration;

use crate::{backend, Behaviour};
use http_body_util::BodyExt;
use mesh_tower::{body, Mesh};

use crate::Error;

/// The mesh config with `v1_weight`% to v1 and the rest to v2.
pub fn config(v1_port: u16, v2_port: u16, v1_weight: u32) -> String {
    let v2_weight = 100 - v1_weight;
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
  ports: {{http: {v1_port}}}
  labels: {{app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {v2_port}}}
  labels: {{app: reviews, version: v2}}
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

/// Sends `n` requests and counts answers per version; any failure is an error.
pub async fn measure(client: &mesh_tower::MeshClient, n: u32) -> Result<(u32, u32), Error> {
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        let req = http::Request::get("http://reviews:9080/reviews/1").body(body::empty())?;
        let resp = client.request(req).await?;
        if !resp.status().is_success() {
            return Err(format!("request failed: {}", resp.status()).into());
        }
        match &resp.into_body().collect().await?.to_bytes()[..] {
            b"v1" => v1 += 1,
            b"v2" => v2 += 1,
            other => return Err(format!("unexpected body {other:?}").into()),
        }
    }
    Ok((v1, v2))
}

/// What a canary run observed: (v1, v2) answers per phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryReport {
    /// 1000 requests at 90/10.
    pub before: (u32, u32),
    /// 500 requests sent while the YAML was edited; all succeeded.
    pub during: (u32, u32),
    /// 1000 requests at 50/50.
    pub after: (u32, u32),
}

/// Runs the canary rollout end to end.
pub async fn run() -> Result<CanaryReport, Error> {
    let v1 = backend("v1", Behaviour::Healthy).await?;
    let v2 = backend("v2", Behaviour::Healthy).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 90))?;

    let mesh = Mesh::local(dir.path())
        .namespace("default")
        .labels([("app", "productpage")])
        .poll_interval(Duration::from_millis(100))
        .build()
        .await?;
    let client = mesh.http_client();
    let before = measure(&client, 1000).await?;

    // Edit the YAML while traffic keeps flowing.
    let mut model = mesh.model();
    let background = {
        let client = client.clone();
        tokio::spawn(async move { measure(&client, 500).await })
    };
    std::fs::write(&file, config(v1.addr.port(), v2.addr.port(), 50))?;
    tokio::time::timeout(Duration::from_secs(10), model.changed()).await??;
    let during = background.await??;
    let after = measure(&client, 1000).await?;
    Ok(CanaryReport {
        before,
        during,
        after,
    })
}
