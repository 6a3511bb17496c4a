//! `ads-load`: runs a fleet of simulated proxyless gRPC xDS clients
//! against meshd and/or istiod started as child processes, and prints the
//! time to configure every client, server CPU and RSS, and the same for
//! one VirtualService edit. See the crate docs of `mesh_loadgen`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mesh_loadgen::fleet::FleetSpec;
use mesh_loadgen::report;
use mesh_loadgen::run::{self, Measurement, Plan};
use mesh_loadgen::server::Kind;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Meshd,
    Istiod,
    Both,
}

/// ADS load generator: SotW or Delta gRPC-like clients against meshd and istiod.
#[derive(Parser, Debug)]
#[command(name = "ads-load", about)]
struct Args {
    /// Which control plane(s) to run; `both` runs meshd then istiod on the same YAML.
    #[arg(long, value_enum, default_value = "both")]
    server: Which,
    /// Simulated clients (one ADS stream each).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Services in the generated config.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Services each client targets (listeners it asks for).
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Distinct client identities (apps) the clients share.
    #[arg(long, default_value_t = 10)]
    apps: usize,
    /// Delta ADS instead of SotW.
    #[arg(long)]
    delta: bool,
    /// After the initial push, edit one VirtualService and time it.
    #[arg(long)]
    edit: bool,
    /// Make every app a server too (a ServiceEntry selects its pods), so
    /// each client is sent server listeners named by its own IP.
    #[arg(long)]
    serving: bool,
    /// Bound on the initial push and on the edit, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Quiet time before reading steady RSS and after the edit, in seconds.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Kill the server when its RSS passes this many MiB (0: no limit).
    #[arg(long, default_value_t = 16384)]
    max_rss_mib: u64,
    /// The meshd binary [default: target/release/meshd, else target/debug/meshd].
    #[arg(long)]
    meshd: Option<PathBuf>,
    /// istiod's pilot-discovery [default: the last line of `bash scripts/istiod.sh`].
    #[arg(long)]
    istiod: Option<PathBuf>,
    /// Extra environment for istiod, KEY=VALUE (repeatable), e.g.
    /// PILOT_MAX_REQUESTS_PER_SECOND=1000 to lift its connection rate limit.
    #[arg(long = "istiod-env", value_parser = parse_env)]
    istiod_env: Vec<(String, String)>,
    /// Extra environment for meshd, KEY=VALUE (repeatable).
    #[arg(long = "meshd-env", value_parser = parse_env)]
    meshd_env: Vec<(String, String)>,
    /// Where to write the YAML (kept) [default: a temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// The workspace root, from where this binary was built.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn find_meshd() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("meshd"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    candidates.push(target.join("release").join("meshd"));
    candidates.push(target.join("debug").join("meshd"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "no meshd binary: build it with `cargo build --release -p mesh-control --bin meshd` \
         or pass --meshd PATH"
            .to_string()
    })
}

fn find_istiod() -> Result<PathBuf, String> {
    let root = repo_root();
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts").join("istiod.sh"))
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running scripts/istiod.sh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text.lines().last().map(str::trim).unwrap_or_default();
    if !out.status.success() || path.is_empty() {
        return Err(format!(
            "scripts/istiod.sh failed ({}); pass --istiod PATH to a pilot-discovery binary",
            out.status
        ));
    }
    Ok(PathBuf::from(path))
}

async fn main_async(args: Args) -> Result<(), String> {
    let kinds: &[Kind] = match args.server {
        Which::Meshd => &[Kind::Meshd],
        Which::Istiod => &[Kind::Istiod],
        Which::Both => &[Kind::Meshd, Kind::Istiod],
    };
    let mut bins = Vec::new();
    for &k in kinds {
        let bin = match k {
            Kind::Meshd => args.meshd.clone().map_or_else(find_meshd, Ok)?,
            Kind::Istiod => args.istiod.clone().map_or_else(find_istiod, Ok)?,
        };
        bins.push((k, bin));
    }
    let scratch = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("config"));
    let plan = Plan {
        fleet: FleetSpec {
            clients: args.clients,
            services: args.services,
            targets: args.targets,
            connections: args.connections,
            delta: args.delta,
            apps: args.apps,
            serving: args.serving,
            naming: Default::default(),
        },
        edit: args.edit,
        timeout: Duration::from_secs(args.timeout),
        settle: Duration::from_secs_f64(args.settle.max(0.0)),
        max_rss_kib: (args.max_rss_mib > 0).then_some(args.max_rss_mib * 1024),
    };
    let mut results: Vec<Measurement> = Vec::new();
    for (kind, bin) in &bins {
        eprintln!(
            "running {} ({}) with {} clients x {} services ...",
            kind.name(),
            bin.display(),
            args.clients,
            args.services
        );
        let env = match kind {
            Kind::Meshd => &args.meshd_env,
            Kind::Istiod => &args.istiod_env,
        };
        match run::run_server(*kind, bin, env, &dir, &plan).await {
            Ok(m) => {
                eprintln!("{}", report::row(&m));
                results.push(m);
            }
            Err(e) => eprintln!("{}: {e}", kind.name()),
        }
    }
    println!("{}", report::header());
    for m in &results {
        println!("{}", report::row(m));
    }
    for m in &results {
        print!("{}", report::notes(m));
    }
    if let [a, b] = results.as_slice() {
        print!("{}", report::ratios(a, b));
    }
    if results.len() < bins.len() {
        return Err("a server failed; see above".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ads-load: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-load: {e}");
            ExitCode::FAILURE
        }
    }
}
