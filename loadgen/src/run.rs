//! One measurement: generate the YAML, start the server, connect the
//! fleet, time the initial push until every client is configured (CPU
//! and RSS from `/proc`), let it settle, then edit one VirtualService and
//! time until every client that targets it has ACKed the new route
//! configuration. Everything is bounded by the plan's timeout; a run that
//! does not finish reports how far it got.
//!
//! Not here: printing (see [`crate::report`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::config;
use crate::fleet::{Change, Fleet, FleetSpec, Progress};
use crate::server::{self, Kind, Sample, Server};
use crate::LoadError;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The clients.
    pub fleet: FleetSpec,
    /// Whether to edit a VirtualService after the initial push.
    pub edit: bool,
    /// Bound on the initial push, and again on the edit.
    pub timeout: Duration,
    /// Quiet time before the steady RSS is read, and after the edit.
    pub settle: Duration,
    /// The server is killed when its RSS passes this many KiB (a guard
    /// for the machine; the run then reports how far it got).
    pub max_rss_kib: Option<u64>,
}

/// The edit's result (or any one change's: see [`time_change`]).
#[derive(Debug, Clone)]
pub struct EditResult {
    /// Clients that target the edited service, and how many of them
    /// ACKed the changed route (or endpoints) in time.
    pub progress: Progress,
    /// From writing the change until the last affected client ACKed (or
    /// the deadline).
    pub time: Duration,
    /// Clients that saw the change, affected or not.
    pub changed: usize,
    /// Server CPU seconds from the write until the last ACK.
    pub cpu_s: Option<f64>,
    /// Server CPU seconds from the write until the settle time after it.
    pub cpu_settled_s: Option<f64>,
}

/// One server's numbers.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// `meshd` or `istiod`.
    pub server: String,
    /// The plan.
    pub plan: Plan,
    /// CPU seconds the server spent starting (before any client).
    pub startup_cpu_s: Option<f64>,
    /// How many clients were configured in time.
    pub initial: Progress,
    /// From opening the first stream until the last client was
    /// configured (or the deadline).
    pub initial_time: Duration,
    /// Server CPU seconds from the first stream until all configured.
    pub initial_cpu_s: Option<f64>,
    /// Peak RSS (VmHWM) after the initial push, KiB.
    pub peak_rss_kib: Option<u64>,
    /// RSS after the initial push and the settle time, KiB.
    pub steady_rss_kib: Option<u64>,
    /// RSS before the first client connected, KiB.
    pub idle_rss_kib: Option<u64>,
    /// The edit, when asked for.
    pub edit: Option<EditResult>,
    /// Peak RSS at the end of the run, KiB.
    pub final_peak_rss_kib: Option<u64>,
    /// Resources of each type (LDS, RDS, CDS, EDS) held by the configured
    /// clients, summed.
    pub resources: [usize; 4],
    /// The server passed [`Plan::max_rss_kib`] and was killed.
    pub killed_over_rss: bool,
}

fn sample(pid: Option<u32>) -> Option<Sample> {
    pid.and_then(|p| server::sample(p).ok())
}

fn cpu_between(a: Option<Sample>, b: Option<Sample>) -> Option<f64> {
    Some(b?.cpu_s - a?.cpu_s)
}

impl Measurement {
    /// What each client added to the server's RSS: steady minus idle,
    /// over the clients, KiB.
    pub fn kib_per_client(&self) -> Option<f64> {
        let grown = self.steady_rss_kib?.saturating_sub(self.idle_rss_kib?);
        Some(grown as f64 / self.plan.fleet.clients.max(1) as f64)
    }

    /// Server CPU per client for the initial push, milliseconds.
    pub fn cpu_ms_per_client(&self) -> Option<f64> {
        Some(self.initial_cpu_s? * 1000.0 / self.plan.fleet.clients.max(1) as f64)
    }
}

/// The service the edit changes.
pub const EDITED: usize = 0;

/// Runs `plan` against a server already serving `dir` at `addr`; `pid`
/// is its process when it is one of its own (for CPU and RSS).
pub async fn measure(
    name: &str,
    addr: SocketAddr,
    pid: Option<u32>,
    dir: &Path,
    plan: &Plan,
) -> Result<Measurement, LoadError> {
    let before = sample(pid);
    let guard = match (pid, plan.max_rss_kib) {
        (Some(pid), Some(max)) => Some(tokio::spawn(rss_guard(pid, max))),
        _ => None,
    };
    let mut fleet = Fleet::start(addr, plan.fleet.clone()).await?;
    let initial = fleet.wait_configured(fleet.started + plan.timeout).await;
    let configured = sample(pid);
    let initial_time = initial.at.saturating_duration_since(fleet.started);
    fleet.idle(plan.settle).await;
    let settled = sample(pid);
    let mut m = Measurement {
        server: name.to_string(),
        plan: plan.clone(),
        startup_cpu_s: None,
        initial_cpu_s: cpu_between(before, configured),
        peak_rss_kib: configured.map(|s| s.hwm_kib),
        steady_rss_kib: settled.map(|s| s.rss_kib),
        idle_rss_kib: before.map(|s| s.rss_kib),
        initial_time,
        edit: None,
        final_peak_rss_kib: None,
        killed_over_rss: false,
        resources: fleet.resources(),
        initial,
    };
    if plan.edit && m.initial.complete() {
        let affected = fleet.affected_by(EDITED);
        let apply = async { config::edit(dir, EDITED, config::BASE_TIMEOUT_S + 1) };
        let timing = Timing {
            pid,
            timeout: plan.timeout,
            settle: plan.settle,
        };
        m.edit = Some(time_change(&mut fleet, Change::Route, affected, apply, timing).await?);
    }
    m.final_peak_rss_kib = sample(pid).map(|s| s.hwm_kib);
    fleet.stop().await;
    if let Some(g) = guard {
        g.abort();
        m.killed_over_rss = matches!(g.await, Ok(true));
    }
    Ok(m)
}

/// How [`time_change`] bounds and samples a change.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The server process, for CPU (none: no CPU figures).
    pub pid: Option<u32>,
    /// Bound on the wait for every affected client.
    pub timeout: Duration,
    /// Quiet time after the last ACK before the settled CPU is read.
    pub settle: Duration,
}

/// Times one change: forgets earlier changes, runs `apply` (the write:
/// a file, or a request to an API server), then waits until every client
/// in `affected` has ACKed a `change` (or the timeout), and reads the
/// server's CPU at the write, at the last ACK and after the settle time.
/// The time runs from just before `apply` starts.
pub async fn time_change(
    fleet: &mut Fleet,
    change: Change,
    affected: Vec<bool>,
    apply: impl std::future::Future<Output = Result<(), LoadError>>,
    timing: Timing,
) -> Result<EditResult, LoadError> {
    fleet.mark_edit();
    let at_edit = sample(timing.pid);
    let start = Instant::now();
    apply.await?;
    let progress = fleet
        .wait_changed(change, affected, start + timing.timeout)
        .await;
    let acked = sample(timing.pid);
    let time = progress.at.saturating_duration_since(start);
    fleet.idle(timing.settle).await;
    let after = sample(timing.pid);
    Ok(EditResult {
        time,
        changed: fleet.changed_count(change),
        cpu_s: cpu_between(at_edit, acked),
        cpu_settled_s: cpu_between(at_edit, after),
        progress,
    })
}

/// Samples `pid` every 200 ms; kills it (by its id, with `kill -9`) when
/// its RSS passes `max_kib`, and then returns true.
async fn rss_guard(pid: u32, max_kib: u64) -> bool {
    loop {
        match server::sample(pid) {
            Ok(s) if s.rss_kib > max_kib => {
                eprintln!(
                    "server pid {pid} RSS {} MiB passed the limit of {} MiB: killing it",
                    s.rss_kib / 1024,
                    max_kib / 1024
                );
                let _ = tokio::process::Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string())
                    .status()
                    .await;
                return true;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes the YAML into `dir` (fresh, so every server gets the same
/// files), starts `kind` from `bin` with extra environment `env`,
/// measures, stops it.
pub async fn run_server(
    kind: Kind,
    bin: &Path,
    env: &[(String, String)],
    dir: &Path,
    plan: &Plan,
) -> Result<Measurement, LoadError> {
    config::generate(dir, plan.fleet.services)?;
    config::serve_apps(dir, plan.fleet.serving.then_some(plan.fleet.apps))?;
    let server = Server::start(kind, bin, dir, env).await?;
    // Let the first compile finish before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let startup = sample(Some(server.pid()));
    let result = measure(
        kind.name(),
        server.xds_addr(),
        Some(server.pid()),
        dir,
        plan,
    )
    .await;
    let nacks = server.log_count("ACK ERROR");
    if nacks > 0 {
        eprintln!("warning: {} logged {nacks} NACKs", kind.name());
    }
    server.stop().await;
    let mut m = result?;
    m.startup_cpu_s = startup.map(|s| s.cpu_s);
    Ok(m)
}
