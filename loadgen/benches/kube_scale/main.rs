//! meshd at scale on Kubernetes (issue 17, item 8): 1000 Services, 5000
//! EndpointSlices and 10000 Pods in a real kube-apiserver; meshd's time to
//! ready, its RSS, and the time from an EndpointSlice change until every
//! affected client has ACKed it, with the same objects as files for
//! `meshd --config DIR` as the baseline in the same run.
//!
//! ```text
//! cargo build --release -p mesh-control --bin meshd
//! cargo bench -p mesh-loadgen --bench kube_scale -- --services 1000 --slices-per-service 5 --pods 10000
//! cargo bench -p mesh-loadgen --bench kube_scale -- --smoke
//! ```
//!
//! `scripts/kube-scale.sh` does both steps. Needs the kube-apiserver and
//! etcd of `scripts/kube-peers.sh` (cached in ~/.cache/mesh-peers). Prints
//! a Markdown table and a `json {...}` line on stdout, progress on stderr.
//! Figures are reported, never judged. See `driver.rs` for what is run.
#![forbid(unsafe_code)]

mod driver;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_loadgen::kube::Layout;

/// meshd at Kubernetes scale: populate a real API server, start meshd on
/// it, configure a fleet of SotW clients, time EndpointSlice changes.
#[derive(Parser, Debug)]
#[command(name = "kube_scale", about)]
struct Args {
    /// Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// EndpointSlices per Service.
    #[arg(long, default_value_t = 5)]
    slices_per_service: usize,
    /// Endpoints per EndpointSlice.
    #[arg(long, default_value_t = 2)]
    endpoints_per_slice: usize,
    /// Pods (endpoint k names Pod k while k < pods; Pods past the
    /// endpoints belong to no Service).
    #[arg(long, default_value_t = 10000)]
    pods: usize,
    /// Application namespaces the Services are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Every N-th Service gets a DestinationRule and a VirtualService (0: none).
    #[arg(long, default_value_t = 10)]
    istio_every: usize,
    /// Simulated SotW clients.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Services each client targets.
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// EndpointSlice changes to time.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Creates in flight while populating.
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
    /// Skip the baseline of the same objects as files.
    #[arg(long)]
    no_files: bool,
    /// Bound on meshd's start, on configuring the clients and on each change, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Quiet time before each RSS reading and after each change, seconds.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// The meshd binary [default: meshd in this executable's profile directory, target/release/meshd for `cargo bench`].
    #[arg(long)]
    meshd: Option<PathBuf>,
    /// Extra environment for meshd, KEY=VALUE (repeatable), e.g. MESHD_LOG=debug.
    #[arg(long = "meshd-env", value_parser = parse_env)]
    meshd_env: Vec<(String, String)>,
    /// Keep meshd's logs in this directory.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// A quick run: 50 Services x 2 slices, 200 Pods, 20 clients, 2 changes.
    #[arg(long)]
    smoke: bool,
    /// Accepted and ignored (`cargo bench` passes it to every bench).
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn options(args: Args) -> Result<driver::Options, String> {
    let meshd = match args.meshd {
        // meshd runs in a scratch directory: make the path absolute.
        Some(p) => {
            std::fs::canonicalize(&p).map_err(|e| format!("--meshd {}: {e}", p.display()))?
        }
        None => driver::meshd_beside_exe()?,
    };
    let mut o = driver::Options {
        layout: Layout {
            services: args.services,
            slices_per_service: args.slices_per_service,
            endpoints_per_slice: args.endpoints_per_slice,
            pods: args.pods,
            namespaces: args.namespaces,
            istio_every: args.istio_every,
        },
        clients: args.clients,
        targets: args.targets,
        connections: args.connections,
        changes: args.changes,
        concurrency: args.concurrency,
        files_baseline: !args.no_files,
        meshd,
        meshd_env: args.meshd_env,
        timeout: Duration::from_secs(args.timeout),
        settle: Duration::from_secs_f64(args.settle.max(0.0)),
        keep_logs: args.keep_logs,
    };
    if args.smoke {
        o.layout.services = 50;
        o.layout.slices_per_service = 2;
        o.layout.pods = 200;
        o.layout.namespaces = 3;
        o.clients = 20;
        o.targets = 3;
        o.changes = 2;
        o.settle = Duration::from_millis(500);
        o.timeout = Duration::from_secs(60);
    }
    if o.layout.services == 0
        || o.layout.slices_per_service == 0
        || o.layout.endpoints_per_slice == 0
    {
        return Err(
            "--services, --slices-per-service and --endpoints-per-slice must be > 0".into(),
        );
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = match options(Args::parse()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kube_scale: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube_scale: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(driver::run(options)) {
        Ok(report) => {
            print!("{}", report.table());
            println!("json {}", report.json());
            if report.kube.complete() && report.files.as_ref().is_none_or(|f| f.complete()) {
                ExitCode::SUCCESS
            } else {
                eprintln!("kube_scale: not every client was configured or ACKed every change in time; see above");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kube_scale: {e}");
            ExitCode::FAILURE
        }
    }
}
