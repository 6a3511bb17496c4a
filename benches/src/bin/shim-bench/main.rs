//! `shim-bench`: what `mesh-shim` costs, side by side in one run with a
//! direct call, nginx and haproxy as plain reverse proxies, and two shims
//! with mesh mTLS between them, all in front of the same loopback
//! upstream. Throughput at saturation (wrk HTTP/1.1, h2load HTTP/2),
//! latency at a fixed rate (this binary's own paced open-loop generator),
//! proxy CPU per 1000 requests and proxy memory, from `/proc`.
//!
//! Run it through `scripts/shim-bench.sh`, which installs wrk, h2load,
//! nginx and haproxy and builds the release shim. Every load is bounded
//! in time (and the paced one in count too); everything is on 127.0.0.1.
//! It reports against the shim's goals, it never fails on them.

mod load;
mod procs;
mod report;
mod rows;
mod upstream;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procs::{free_port, wait_listening, Proc};
use report::{GroupResult, RowResult};
use rows::{Env, Kind};

const USAGE: &str = "shim-bench [--shim PATH] [--workers N] [--rate RPS] [--secs S] [--quick]
  --shim PATH    the mesh-shim binary (default: mesh-shim beside this binary)
  --workers N    shim threads = nginx worker processes = haproxy threads (default 1)
  --rate RPS     the paced load's rate for the latency and CPU-per-request rows (default 1000)
  --secs S       each saturation load's duration; the paced load runs 2x (default 5)
  --quick        1-second loads at 200 rps: checks that every row works";

/// The run's knobs.
#[derive(Debug, Clone)]
struct Opts {
    shim: PathBuf,
    workers: u16,
    rate: u32,
    secs: u64,
    paced_secs: u64,
    quick: bool,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("mesh-shim")))
        .unwrap_or_else(|| PathBuf::from("mesh-shim"));
    let mut o = Opts {
        shim: beside,
        workers: 1,
        rate: 1000,
        secs: 5,
        paced_secs: 10,
        quick: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let num = |name: &str, v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} {v:?}: not a positive number\n{USAGE}"))
        };
        match a.as_str() {
            "--shim" => o.shim = PathBuf::from(val("--shim")?),
            "--workers" => {
                o.workers = u16::try_from(num("--workers", val("--workers")?)?)
                    .map_err(|_| "--workers: too many".to_string())?
            }
            "--rate" => {
                o.rate = u32::try_from(num("--rate", val("--rate")?)?)
                    .map_err(|_| "--rate: too high".to_string())?
            }
            "--secs" => {
                o.secs = num("--secs", val("--secs")?)?.min(60);
                o.paced_secs = o.secs * 2;
            }
            "--quick" => o.quick = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.quick {
        o.secs = 1;
        o.paced_secs = 1;
        o.rate = o.rate.min(200);
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("upstream") {
        let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        return match upstream::run(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shim-bench upstream: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shim-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first line a tool prints about its version (stdout or stderr).
fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| format!("{program}: not found"))
}

/// The 1/5/15-minute load averages: everything here shares the cores with
/// whatever else the machine runs, and a reader of the table should know
/// how busy it was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(o: &Opts) -> Result<(), String> {
    if !o.shim.is_file() {
        return Err(format!(
            "no mesh-shim at {}; build it with `cargo build --release -p sidecar-shim` or pass --shim",
            o.shim.display()
        ));
    }
    for (tool, arg) in [
        ("wrk", "-v"),
        ("h2load", "--version"),
        ("nginx", "-v"),
        ("haproxy", "-v"),
    ] {
        println!("# {}", version(tool, arg));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# {cores} cores; {} workers per proxy; shim {}; load average {}",
        o.workers,
        o.shim.display(),
        loadavg()
    );
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let up_port = free_port()?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let _upstream = Proc::spawn(
        "upstream",
        Command::new(me).args(["upstream", &up_port.to_string()]),
        &scratch.path().join("upstream.log"),
    )?;
    wait_listening(
        std::net::SocketAddr::from(([127, 0, 0, 1], up_port)),
        Duration::from_secs(10),
    )?;
    let env = Env::new(scratch.path(), up_port, o.shim.clone(), o.workers)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for kind in Kind::ALL {
        eprintln!("== {}", kind.label());
        let r = measure(&env, kind, o, &rt);
        if let Err(e) = &r {
            eprintln!("   {} failed: {e}", kind.label());
        }
        results.push((kind, r));
    }
    println!("# load average after the run {}", loadavg());
    println!();
    print!("{}", report::render(&results, o.rate, o.workers));
    if results.iter().any(|(_, r)| r.is_err()) {
        return Err("some rows failed (above)".into());
    }
    Ok(())
}

/// Samples the proxies' RSS every 100 ms while a load runs: the busiest
/// moment of a multi-process proxy is when their sum peaks, which the
/// per-process `VmHWM`s cannot tell.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(groups: Vec<procs::Group>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = vec![0u64; groups.len()];
            while !flag.load(Ordering::Relaxed) {
                for (m, g) in max.iter_mut().zip(&groups) {
                    *m = (*m).max(g.rss_kib().0);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        });
        RssSampler { stop, handle }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn cpu(groups: &[procs::Group]) -> Vec<f64> {
    groups.iter().map(procs::Group::cpu_seconds).collect()
}

fn delta(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

fn measure(
    env: &Env,
    kind: Kind,
    o: &Opts,
    rt: &tokio::runtime::Runtime,
) -> Result<RowResult, String> {
    let mut row = env.start(kind)?;
    rt.block_on(load::probe(row.h1))?;
    // Idle: started, one request served, a moment to settle.
    std::thread::sleep(Duration::from_millis(500));
    let idle: Vec<u64> = row.groups.iter().map(|g| g.rss_kib().0).collect();
    let sampler = RssSampler::start(row.groups.clone());

    // Warm-up: connection pools, allocator arenas, TLS sessions.
    load::wrk(row.h1, 32, 1)?;
    let c0 = cpu(&row.groups);
    let wrk = load::wrk(row.h1, 32, o.secs);
    let c1 = cpu(&row.groups);
    let h2 = load::h2load(row.h2, 8, 16, o.secs);
    let c2 = cpu(&row.groups);
    let paced = rt.block_on(load::paced(
        row.h1,
        o.rate,
        Duration::from_secs(o.paced_secs),
        16,
    ));
    let c3 = cpu(&row.groups);
    let load_max = sampler.finish();
    row.check_alive()?;
    let (cpu_wrk, cpu_h2, cpu_paced) = (delta(&c1, &c0), delta(&c2, &c1), delta(&c3, &c2));
    let groups = row
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| GroupResult {
            name: g.name.clone(),
            idle_kib: idle[i],
            load_kib: load_max[i].max(g.rss_kib().0),
            hwm_kib: g.rss_kib().1,
            cpu_wrk: cpu_wrk[i],
            cpu_h2: cpu_h2[i],
            cpu_paced: cpu_paced[i],
        })
        .collect();
    for (name, r) in [("wrk", &wrk), ("h2load", &h2)] {
        if let Err(e) = r {
            eprintln!("   {name}: {e}");
        }
    }
    Ok(RowResult {
        wrk: wrk.ok(),
        h2: h2.ok(),
        paced,
        groups,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(a: &[&str]) -> Result<Opts, String> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn quick_mode_bounds_every_load_to_a_second() {
        let o = args(&["--quick", "--workers", "2", "--shim", "/x/mesh-shim"]).unwrap();
        assert_eq!((o.secs, o.paced_secs, o.rate, o.workers), (1, 1, 200, 2));
        assert_eq!(o.shim, PathBuf::from("/x/mesh-shim"));
        let o = args(&["--secs", "600"]).unwrap();
        assert_eq!(
            (o.secs, o.paced_secs),
            (60, 120),
            "a load is capped at a minute"
        );
        assert!(args(&["--workers", "0"]).unwrap_err().contains("positive"));
        assert!(args(&["--rate"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown"));
    }
}
