//! Printing measurements: one row per server and, for two servers, the
//! meshd / istiod ratios.
//!
//! Not here: measuring.

use std::fmt::Write as _;
use std::time::Duration;

use crate::run::Measurement;

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn opt_f(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn mib(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1024.0))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// The header line of [`row`].
pub fn header() -> String {
    format!(
        "{:<7} {:>6} {:>5} {:>5} {:>11} {:>9} {:>7} {:>7} {:>8} {:>8} {:>11} {:>9} {:>7} {:>8} {:>8}",
        "server",
        "client",
        "svc",
        "mode",
        "configured",
        "init_s",
        "init_cpu",
        "start_cpu",
        "peakMiB",
        "steadyMiB",
        "edit_acked",
        "edit_s",
        "edit_cpu",
        "KiB/cl",
        "cpu_ms/cl"
    )
}

/// One measurement as a row.
pub fn row(m: &Measurement) -> String {
    let (edit_acked, edit_s, edit_cpu) = match &m.edit {
        Some(e) => (
            format!("{}/{}", e.progress.done, e.progress.of),
            secs(e.time),
            opt_f(e.cpu_s),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    format!(
        "{:<7} {:>6} {:>5} {:>5} {:>11} {:>9} {:>7} {:>7} {:>8} {:>8} {:>11} {:>9} {:>7} {:>8} {:>8}",
        m.server,
        m.plan.fleet.clients,
        m.plan.fleet.services,
        if m.plan.fleet.delta { "delta" } else { "sotw" },
        format!("{}/{}", m.initial.done, m.initial.of),
        secs(m.initial_time),
        opt_f(m.initial_cpu_s),
        opt_f(m.startup_cpu_s),
        mib(m.peak_rss_kib),
        mib(m.steady_rss_kib),
        edit_acked,
        edit_s,
        edit_cpu,
        m.kib_per_client().map_or("-".into(), |v| format!("{v:.0}")),
        opt_f(m.cpu_ms_per_client()),
    )
}

/// The meshd / istiod ratios of two measurements of the same plan.
pub fn ratios(a: &Measurement, b: &Measurement) -> String {
    let mut s = String::new();
    let f = |v: Option<u64>| v.map(|v| v as f64);
    let complete = a.initial.complete() && b.initial.complete();
    let _ = writeln!(
        s,
        "{} / {} ({} clients x {} services{}):",
        a.server,
        b.server,
        a.plan.fleet.clients,
        a.plan.fleet.services,
        if complete {
            ""
        } else {
            ", NOT all configured: ratios of partial runs"
        }
    );
    let _ = writeln!(
        s,
        "  time to configure {}  initial CPU {}  peak RSS {}  steady RSS {}",
        ratio(
            Some(a.initial_time.as_secs_f64()),
            Some(b.initial_time.as_secs_f64())
        ),
        ratio(a.initial_cpu_s, b.initial_cpu_s),
        ratio(f(a.peak_rss_kib), f(b.peak_rss_kib)),
        ratio(f(a.steady_rss_kib), f(b.steady_rss_kib)),
    );
    if let (Some(ea), Some(eb)) = (&a.edit, &b.edit) {
        let _ = writeln!(
            s,
            "  edit: time to ACK {}  CPU {}",
            ratio(Some(ea.time.as_secs_f64()), Some(eb.time.as_secs_f64())),
            ratio(ea.cpu_s, eb.cpu_s),
        );
    }
    s
}

/// Extra lines for a measurement: partial progress, streams that ended.
pub fn notes(m: &Measurement) -> String {
    let mut s = String::new();
    if m.killed_over_rss {
        let _ = writeln!(
            s,
            "  {}: KILLED: its RSS passed the --max-rss-mib limit",
            m.server
        );
    }
    if !m.initial.complete() {
        let _ = writeln!(
            s,
            "  {}: only {}/{} clients configured before the timeout",
            m.server, m.initial.done, m.initial.of
        );
    }
    let [l, r, c, e] = m.resources;
    let _ = writeln!(
        s,
        "  {}: configured clients hold {l} listeners, {r} route configs, {c} clusters, {e} endpoint sets",
        m.server
    );
    if m.initial.ended > 0 {
        let _ = writeln!(
            s,
            "  {}: {} streams ended and were reopened after a backoff, first: {}",
            m.server,
            m.initial.ended,
            m.initial.first_end.as_deref().unwrap_or("?")
        );
    }
    if let Some(e) = &m.edit {
        let _ = writeln!(
            s,
            "  {}: edit reached {}/{} affected clients ({} saw a route change), CPU until settled {}",
            m.server,
            e.progress.done,
            e.progress.of,
            e.changed,
            opt_f(e.cpu_settled_s)
        );
    }
    s
}
