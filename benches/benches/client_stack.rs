//! The whole client stack (route, split, retry/timeout, load balancing,
//! outlier detection, pool limits) against the bare hyper client, on the
//! same loopback server in the same run: requests per second with a few
//! concurrent callers, and p50/p99 latency of sequential requests.
//!
//! Run: `cargo bench -p mesh-benches --bench client_stack`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::{body, Mesh, MeshBody};

type Error = Box<dyn std::error::Error + Send + Sync>;

static ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn server() -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn config(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.bench.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api.bench.local
  trafficPolicy:
    connectionPool:
      http: {{http1MaxPendingRequests: 1024, http2MaxRequests: 1024}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.bench.local]
  http:
  - match: [{{uri: {{prefix: /v2}}}}]
    route: [{{destination: {{host: api.bench.local}}}}]
  - route: [{{destination: {{host: api.bench.local}}}}]
    timeout: 5s
    retries: {{attempts: 2, retryOn: connect-failure,refused-stream}}
"
    )
}

/// Something that sends one GET and returns when the body is read.
trait Caller: Clone + Send + 'static {
    fn call(&self) -> impl std::future::Future<Output = Result<(), Error>> + Send;
}

#[derive(Clone)]
struct Bare {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, MeshBody>,
    uri: http::Uri,
}

impl Caller for Bare {
    async fn call(&self) -> Result<(), Error> {
        let req = http::Request::get(self.uri.clone()).body(body::empty())?;
        let resp = self.client.request(req).await?;
        resp.into_body().collect().await?;
        Ok(())
    }
}

#[derive(Clone)]
struct Meshed {
    client: mesh_tower::MeshClient,
    uri: http::Uri,
}

impl Caller for Meshed {
    async fn call(&self) -> Result<(), Error> {
        // Parsed once, as for the bare client: only the stacks differ.
        let req = http::Request::get(self.uri.clone()).body(body::empty())?;
        let resp = self.client.request(req).await?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()).into());
        }
        resp.into_body().collect().await?;
        Ok(())
    }
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Process CPU time (client and server together) per request in the
    /// throughput phase: what the stack adds to every request's cost.
    cpu_per_req: Duration,
}

/// User + system CPU time of this process so far, from /proc/self/stat.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces).
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // Linux reports in USER_HZ, 100 per second on every common platform.
    Duration::from_millis(ticks * 10)
}

async fn measure<C: Caller>(caller: C) -> Result<Figures, Error> {
    // Warm up connections and caches.
    for _ in 0..500 {
        caller.call().await?;
    }
    // Latency: sequential requests.
    let mut lat = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        caller.call().await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    // Throughput: 4 concurrent callers for a fixed time.
    let cpu0 = cpu_time();
    let secs = 1.0;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = caller.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                c.call().await?;
                n += 1;
            }
            Ok::<u64, Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let cpu = cpu_time().saturating_sub(cpu0);
    Ok(Figures {
        cpu_per_req: cpu / (total.max(1) as u32),
        rps: total as f64 / secs,
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
    })
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

const ROUNDS: usize = 9;

/// Both clients on one runtime with `threads` workers, serving the same
/// loopback server: `ROUNDS` back-to-back pairs (bare, then mesh), so the
/// machine's noise falls on both sides of each ratio alike.
fn run(threads: usize) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = server().await?;
        let bare = Bare {
            client: Client::builder(TokioExecutor::new()).build_http(),
            uri: format!("http://{addr}/items/1").parse()?,
        };
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("api.yaml"), config(addr.port()))?;
        let mesh = Mesh::local(dir.path()).namespace("default").build().await?;
        let meshed = Meshed {
            client: mesh.http_client(),
            uri: "http://api.bench.local/items/1".parse()?,
        };
        // For profiling one side alone: CLIENT_STACK_ONLY=mesh|bare.
        if let Ok(only) = std::env::var("CLIENT_STACK_ONLY") {
            let f = if only == "bare" {
                measure(bare).await?
            } else {
                measure(meshed).await?
            };
            println!(
                "{only}: {:.0} req/s, p50 {:.1?}, p99 {:.1?}, cpu/req {:.1?}",
                f.rps, f.p50, f.p99, f.cpu_per_req
            );
            return Ok(());
        }
        let conns = || ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "\n{threads} worker thread(s), client and server on the same runtime, loopback HTTP/1.1"
        );
        println!(
            "round      bare req/s   mesh req/s   ratio   bare cpu/req  mesh cpu/req  added   p50 bare/mesh"
        );
        let (mut ratios, mut added, mut p50s) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            let c0 = conns();
            let b = measure(bare.clone()).await?;
            let m = measure(meshed.clone()).await?;
            if round == 1 && conns() - c0 > 16 {
                return Err(format!("{} connections opened: pooling is broken", conns() - c0).into());
            }
            let ratio = m.rps / b.rps;
            let extra = m.cpu_per_req.as_secs_f64() - b.cpu_per_req.as_secs_f64();
            println!(
                "{round:>5} {:>14.0} {:>12.0} {:>7.3} {:>13.1?} {:>13.1?} {:>+6.1}µs {:>7.1?}/{:.1?}",
                b.rps,
                m.rps,
                ratio,
                b.cpu_per_req,
                m.cpu_per_req,
                extra * 1e6,
                b.p50,
                m.p50
            );
            ratios.push(ratio);
            added.push(extra * 1e6);
            p50s.push((m.p50.as_secs_f64() - b.p50.as_secs_f64()) * 1e6);
        }
        println!(
            "median: mesh/bare throughput {:.3}x, cpu/req {:+.1}µs, p50 {:+.1}µs",
            median(&mut ratios),
            median(&mut added),
            median(&mut p50s)
        );
        Ok(())
    })
}

fn main() -> Result<(), Error> {
    // CLIENT_STACK_THREADS picks one runtime size; by default both: two
    // workers (contention between cores included) and one (the stack's
    // own CPU cost, without cross-core effects).
    match std::env::var("CLIENT_STACK_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        Some(t) => run(t),
        None => {
            run(2)?;
            run(1)
        }
    }
}
