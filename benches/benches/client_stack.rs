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

/// What one side did over a round, summed over its slices.
#[derive(Default)]
struct Tally {
    requests: u64,
    wall: Duration,
    /// Process CPU time (client and server together) in the throughput
    /// slices: what the stack adds to every request's cost.
    cpu: Duration,
    /// Sequential request latencies.
    lat: Vec<Duration>,
}

impl Tally {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_per_req(&self) -> Duration {
        self.cpu / (self.requests.max(1) as u32)
    }

    /// The latency at `per_mille`/1000 of the samples.
    fn pct(&mut self, per_mille: usize) -> Duration {
        self.lat.sort();
        let i = (self.lat.len() * per_mille / 1000).min(self.lat.len().saturating_sub(1));
        self.lat.get(i).copied().unwrap_or_default()
    }
}

/// CPU time of the whole process so far, to the nanosecond (the tick
/// counts of /proc are 10 ms: too coarse for slices of 100 ms).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Concurrent callers in the throughput slices.
const CALLERS: usize = 4;
/// One throughput slice. Short slices, alternated between the sides, put
/// the machine's slow swings (a noisy neighbour, frequency changes) on
/// both sides alike; one long run per side would hand them to one side.
const SLICE: Duration = Duration::from_millis(100);
/// Slice pairs per round.
const PAIRS: usize = 10;
/// Sequential requests per side per pair, for latency.
const LATENCY_BATCH: usize = 300;
/// Rounds per runtime size; the median round is reported.
const ROUNDS: usize = 7;

/// `CALLERS` concurrent callers for one `SLICE`, added to `tally`.
async fn slice<C: Caller>(caller: &C, tally: &mut Tally) -> Result<(), Error> {
    let cpu0 = cpu_time();
    let start = Instant::now();
    let deadline = start + SLICE;
    let mut tasks = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
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
    for t in tasks {
        tally.requests += t.await??;
    }
    tally.wall += start.elapsed();
    tally.cpu += cpu_time().saturating_sub(cpu0);
    Ok(())
}

/// `n` requests by `CALLERS` concurrent callers.
async fn fixed<C: Caller>(caller: &C, n: usize) -> Result<(), Error> {
    let mut tasks = Vec::with_capacity(CALLERS);
    for i in 0..CALLERS {
        let c = caller.clone();
        let share = n / CALLERS + usize::from(i < n % CALLERS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                c.call().await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// `LATENCY_BATCH` sequential requests, their latencies added to `tally`.
async fn latency<C: Caller>(caller: &C, tally: &mut Tally) -> Result<(), Error> {
    for _ in 0..LATENCY_BATCH {
        let t = Instant::now();
        caller.call().await?;
        tally.lat.push(t.elapsed());
    }
    Ok(())
}

/// One round: `PAIRS` pairs of slices, in the order bare-mesh, mesh-bare,
/// ... so neither side always runs first.
async fn round(bare: &Bare, mesh: &Meshed) -> Result<(Tally, Tally), Error> {
    let (mut b, mut m) = (Tally::default(), Tally::default());
    for pair in 0..PAIRS {
        if pair % 2 == 0 {
            slice(bare, &mut b).await?;
            slice(mesh, &mut m).await?;
            latency(bare, &mut b).await?;
            latency(mesh, &mut m).await?;
        } else {
            slice(mesh, &mut m).await?;
            slice(bare, &mut b).await?;
            latency(mesh, &mut m).await?;
            latency(bare, &mut b).await?;
        }
    }
    Ok((b, m))
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Both clients on one runtime with `threads` workers, serving the same
/// loopback server, measured in alternating slices (see [`round`]).
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
        let only = std::env::var("CLIENT_STACK_ONLY").ok();
        // Warm up connections and caches.
        let c0 = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..500 {
            if only.as_deref() != Some("mesh") {
                bare.call().await?;
            }
            if only.as_deref() != Some("bare") {
                meshed.call().await?;
            }
        }
        // For profiling one side alone: CLIENT_STACK_ONLY=mesh|bare.
        if let Some(only) = only {
            // CLIENT_STACK_REQUESTS=n: exactly n more requests (by
            // CALLERS concurrent callers) and nothing else, so that two
            // runs under callgrind differ by a known number of requests.
            if let Some(n) = std::env::var("CLIENT_STACK_REQUESTS")
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            {
                if only == "bare" {
                    fixed(&bare, n).await?;
                } else {
                    fixed(&meshed, n).await?;
                }
                return Ok(());
            }
            let mut t = Tally::default();
            for _ in 0..PAIRS {
                if only == "bare" {
                    slice(&bare, &mut t).await?;
                    latency(&bare, &mut t).await?;
                } else {
                    slice(&meshed, &mut t).await?;
                    latency(&meshed, &mut t).await?;
                }
            }
            println!(
                "{only}: {} requests, {:.0} req/s, p50 {:.1?}, p99 {:.1?}, cpu/req {:.2?}",
                t.requests + (PAIRS * LATENCY_BATCH + 500) as u64,
                t.rps(),
                t.pct(500),
                t.pct(990),
                t.cpu_per_req()
            );
            return Ok(());
        }
        println!(
            "\n{threads} worker thread(s), client and server on the same runtime, loopback HTTP/1.1, \
             {CALLERS} callers, {PAIRS} alternating {SLICE:?} slice pairs per round"
        );
        println!(
            "round      bare req/s   mesh req/s   ratio   bare cpu/req  mesh cpu/req    added   p50 bare/mesh   p99 bare/mesh"
        );
        let (mut ratios, mut added, mut p50s) = (Vec::new(), Vec::new(), Vec::new());
        for r in 1..=ROUNDS {
            let (mut b, mut m) = round(&bare, &meshed).await?;
            if r == 1 {
                let opened = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) - c0;
                if opened > 2 * CALLERS as u64 + 2 {
                    return Err(format!("{opened} connections opened: pooling is broken").into());
                }
            }
            let ratio = m.rps() / b.rps();
            let extra = m.cpu_per_req().as_secs_f64() - b.cpu_per_req().as_secs_f64();
            let (bp, mp) = (b.pct(500), m.pct(500));
            println!(
                "{r:>5} {:>14.0} {:>12.0} {:>7.3} {:>13.2?} {:>13.2?} {:>+7.2}µs {:>7.1?}/{:<7.1?} {:>7.1?}/{:.1?}",
                b.rps(),
                m.rps(),
                ratio,
                b.cpu_per_req(),
                m.cpu_per_req(),
                extra * 1e6,
                bp,
                mp,
                b.pct(990),
                m.pct(990)
            );
            ratios.push(ratio);
            added.push(extra * 1e6);
            p50s.push((mp.as_secs_f64() - bp.as_secs_f64()) * 1e6);
        }
        println!(
            "median: mesh/bare throughput {:.3}x, cpu/req {:+.2}µs, p50 {:+.1}µs",
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
