//! The resilience flow behind `examples/resilience.rs`: three backends, one
//! failing every request; retries and outlier detection keep callers whole.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{backend, Behaviour};
use mesh_tower::{body, Mesh};

use crate::Error;

/// The mesh config for three endpoints on `ports`.
pub fn config(ports: [u16; 3]) -> String {
    let entries: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-{i}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {p}}}
  labels: {{app: ratings}}
"
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: default}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080}}]
{entries}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: default}}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {{host: ratings}}
    retries:
      attempts: 2
      retryOn: 5xx,connect-failure,refused-stream
    timeout: 5s
"
    )
}

/// What a resilience run observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceReport {
    /// Requests sent.
    pub total: u32,
    /// Requests answered 2xx.
    pub ok: u32,
    /// Requests the failing backend saw.
    pub bad_served: u64,
    /// Requests each healthy backend saw.
    pub good_served: (u64, u64),
}

impl ResilienceReport {
    /// Success rate in percent.
    pub fn success_rate(&self) -> f64 {
        f64::from(self.ok) * 100.0 / f64::from(self.total)
    }
}

/// Runs `total` requests against the three backends.
pub async fn run(total: u32) -> Result<ResilienceReport, Error> {
    let good_a = backend("a", Behaviour::Healthy).await?;
    let good_b = backend("b", Behaviour::Healthy).await?;
    let bad = backend("bad", Behaviour::Failing).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("ratings.yaml"),
        config([good_a.addr.port(), good_b.addr.port(), bad.addr.port()]),
    )?;
    let mesh = Mesh::local(dir.path())
        .namespace("default")
        .poll_interval(Duration::from_millis(200))
        .build()
        .await?;
    let client = mesh.http_client();
    let mut ok = 0u32;
    for _ in 0..total {
        let req = http::Request::get("http://ratings:9080/ratings/1").body(body::empty())?;
        let resp = client.request(req).await?;
        if resp.status().is_success() {
            ok += 1;
        }
    }
    Ok(ResilienceReport {
        total,
        ok,
        bad_served: bad.served.load(Ordering::Relaxed),
        good_served: (
            good_a.served.load(Ordering::Relaxed),
            good_b.served.load(Ordering::Relaxed),
        ),
    })
}
