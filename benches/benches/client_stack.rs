//! The whole client stack (route, split, retry/timeout, load balancing,
//! outlier detection, pool limits) against the bare hyper client, on the
//! same loopback server in the same run, with the SDK's telemetry off and
//! on (Istio's request metrics and the peer metadata exchange):
//! requests per second with a few concurrent callers, and p50/p99 latency
//! of sequential requests.
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

/// One of the clients measured.
#[derive(Clone)]
enum Side {
    Bare(Bare),
    Mesh(Meshed),
}

impl Caller for Side {
    async fn call(&self) -> Result<(), Error> {
        match self {
            Side::Bare(b) => b.call().await,
            Side::Mesh(m) => m.call().await,
        }
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

/// One round: `PAIRS` turns over every side, each turn starting from
/// the next side, so none always runs first.
async fn round(sides: &[Side]) -> Result<Vec<Tally>, Error> {
    let mut tallies: Vec<Tally> = sides.iter().map(|_| Tally::default()).collect();
    for turn in 0..PAIRS {
        for k in 0..sides.len() {
            let i = (turn + k) % sides.len();
            slice(&sides[i], &mut tallies[i]).await?;
        }
        for k in 0..sides.len() {
            let i = (turn + k) % sides.len();
            latency(&sides[i], &mut tallies[i]).await?;
        }
    }
    Ok(tallies)
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
        let uri: http::Uri = "http://api.bench.local/items/1".parse()?;
        let off = Mesh::local(dir.path())
            .namespace("default")
            .telemetry(false)
            .build()
            .await?;
        let on = Mesh::local(dir.path())
            .namespace("default")
            .labels([("app", "bench"), ("version", "v1")])
            .build()
            .await?;
        // Tracing at Istio's default 1%, to a collector that is not there
        // (export never touches the request path; what is measured is the
        // sampling decision, propagation and the sampled spans).
        let traced_dir = tempfile::tempdir()?;
        std::fs::write(traced_dir.path().join("api.yaml"), config(addr.port()))?;
        std::fs::write(
            traced_dir.path().join("telemetry.yaml"),
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: traces, namespace: default}\nspec:\n  tracing: [{randomSamplingPercentage: 1}]\n",
        )?;
        let mesh_config = traced_dir.path().join("mesh-config.yaml");
        std::fs::write(
            &mesh_config,
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: 127.0.0.1, port: 9}\ndefaultProviders:\n  tracing: [otel]\n",
        )?;
        let traced = Mesh::local(traced_dir.path().join("api.yaml"))
            .add_path(traced_dir.path().join("telemetry.yaml"))
            .namespace("default")
            .labels([("app", "bench"), ("version", "v1")])
            .mesh_config(&mesh_config)
            .build()
            .await?;
        let meshed = Meshed {
            client: off.http_client(),
            uri: uri.clone(),
        };
        let reported = Meshed {
            client: on.http_client(),
            uri: uri.clone(),
        };
        let spanned = Meshed {
            client: traced.http_client(),
            uri,
        };
        let sides = [
            Side::Bare(bare),
            Side::Mesh(meshed),
            Side::Mesh(reported),
            Side::Mesh(spanned),
        ];
        let only = std::env::var("CLIENT_STACK_ONLY").ok();
        let chosen = |name: &str| match name {
            "bare" => Some(0),
            "mesh" => Some(1),
            "telemetry" => Some(2),
            "tracing" => Some(3),
            _ => None,
        };
        // Warm up connections and caches.
        let c0 = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..500 {
            for (i, side) in sides.iter().enumerate() {
                if only.as_deref().and_then(chosen).is_none_or(|o| o == i) {
                    side.call().await?;
                }
            }
        }
        // For profiling one side alone: CLIENT_STACK_ONLY=bare|mesh|telemetry|tracing.
        if let Some(only) = only {
            let side = &sides[chosen(&only).ok_or("CLIENT_STACK_ONLY: bare, mesh, telemetry or tracing")?];
            // CLIENT_STACK_REQUESTS=n: exactly n more requests (by
            // CALLERS concurrent callers) and nothing else, so that two
            // runs under callgrind differ by a known number of requests.
            if let Some(n) = std::env::var("CLIENT_STACK_REQUESTS")
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            {
                fixed(side, n).await?;
                return Ok(());
            }
            let mut t = Tally::default();
            for _ in 0..PAIRS {
                slice(side, &mut t).await?;
                latency(side, &mut t).await?;
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
             {CALLERS} callers, {PAIRS} turns of {SLICE:?} slices per round; \
             mesh = whole stack, telemetry off; +tel = the same with Istio metrics on; +trace = and tracing at 1%"
        );
        println!(
            "round   bare req/s  mesh req/s  +tel req/s  mesh/bare  +tel/bare  +trace/bare   mesh cpu  +tel cpu  +trace cpu   p50 bare/mesh/+tel      p99 bare/mesh/+tel"
        );
        let (mut r_mesh, mut r_tel, mut a_mesh, mut a_tel) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut r_trace, mut a_trace) = (Vec::new(), Vec::new());
        for r in 1..=ROUNDS {
            let mut t = round(&sides).await?;
            if r == 1 {
                let opened = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) - c0;
                if opened > 4 * CALLERS as u64 + 4 {
                    return Err(format!("{opened} connections opened: pooling is broken").into());
                }
            }
            let cpu = |t: &Tally| t.cpu_per_req().as_secs_f64() * 1e6;
            let (rm, rt) = (t[1].rps() / t[0].rps(), t[2].rps() / t[0].rps());
            // CPU the stack adds over bare hyper, and telemetry over the stack.
            let (am, at) = (cpu(&t[1]) - cpu(&t[0]), cpu(&t[2]) - cpu(&t[1]));
            // Tracing over metrics alone.
            let (rr, ar) = (t[3].rps() / t[0].rps(), cpu(&t[3]) - cpu(&t[2]));
            let p50: Vec<Duration> = t.iter_mut().map(|t| t.pct(500)).collect();
            let p99: Vec<Duration> = t.iter_mut().map(|t| t.pct(990)).collect();
            println!(
                "{r:>5} {:>12.0} {:>11.0} {:>11.0} {:>9.3}x {:>9.3}x {:>11.3}x {:>+8.2}µs {:>+7.2}µs {:>+9.2}µs  {:>6.1?}/{:.1?}/{:.1?}  {:>6.1?}/{:.1?}/{:.1?}",
                t[0].rps(),
                t[1].rps(),
                t[2].rps(),
                rm,
                rt,
                rr,
                am,
                at,
                ar,
                p50[0],
                p50[1],
                p50[2],
                p99[0],
                p99[1],
                p99[2],
            );
            r_mesh.push(rm);
            r_tel.push(rt);
            a_mesh.push(am);
            a_tel.push(at);
            r_trace.push(rr);
            a_trace.push(ar);
        }
        println!(
            "median: mesh/bare {:.3}x, +tel/bare {:.3}x, +trace/bare {:.3}x; stack adds {:+.2}µs cpu/req over bare, metrics {:+.2}µs over the stack, 1% tracing {:+.2}µs over metrics",
            median(&mut r_mesh),
            median(&mut r_tel),
            median(&mut r_trace),
            median(&mut a_mesh),
            median(&mut a_tel),
            median(&mut a_trace),
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
