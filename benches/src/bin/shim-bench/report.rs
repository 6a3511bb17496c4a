//! The run's table (Markdown, pasted into the README as printed), the
//! ratios against direct, nginx and haproxy, and the goals met or not.

use std::fmt::Write;

use crate::load::{Paced, Saturation};
use crate::rows::Kind;

/// One proxy process (or nginx's master with workers) in a row.
#[derive(Debug, Clone, Default)]
pub struct GroupResult {
    /// Its name.
    pub name: String,
    /// VmRSS after start and one request, KiB.
    pub idle_kib: u64,
    /// Highest VmRSS sampled during the loads, KiB.
    pub load_kib: u64,
    /// VmHWM at the end, KiB.
    pub hwm_kib: u64,
    /// CPU seconds during the wrk run.
    pub cpu_wrk: f64,
    /// CPU seconds during the h2load run.
    pub cpu_h2: f64,
    /// CPU seconds during the paced run.
    pub cpu_paced: f64,
}

/// A measured row.
#[derive(Debug, Clone, Default)]
pub struct RowResult {
    /// wrk at saturation; `None` when the run failed.
    pub wrk: Option<Saturation>,
    /// h2load at saturation; `None` when the run failed.
    pub h2: Option<Saturation>,
    /// The paced run.
    pub paced: Paced,
    /// The row's proxies (none for direct).
    pub groups: Vec<GroupResult>,
}

impl RowResult {
    fn cpu_per_1000(&self, cpu: impl Fn(&GroupResult) -> f64, requests: u64) -> Option<f64> {
        (!self.groups.is_empty() && requests > 0)
            .then(|| self.groups.iter().map(cpu).sum::<f64>() / (requests as f64 / 1000.0))
    }

    /// Proxy CPU seconds per 1000 requests under wrk.
    fn cpu_wrk(&self) -> Option<f64> {
        self.cpu_per_1000(|g| g.cpu_wrk, self.wrk.map_or(0, |w| w.requests))
    }

    /// Proxy CPU seconds per 1000 requests at the paced rate: also the
    /// vCPUs it takes per 1000 requests per second.
    fn cpu_paced(&self) -> Option<f64> {
        self.cpu_per_1000(|g| g.cpu_paced, self.paced.ok)
    }

    fn rss_mib(&self, f: impl Fn(&GroupResult) -> u64) -> Option<f64> {
        (!self.groups.is_empty()).then(|| self.groups.iter().map(f).sum::<u64>() as f64 / 1024.0)
    }
}

/// 1 MB (10^6 bytes) in MiB: the goals say MB and the table says MiB.
const MB_IN_MIB: f64 = 1_000_000.0 / 1_048_576.0;

fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn sat(s: Option<Saturation>) -> String {
    match s {
        None => "failed".into(),
        Some(s) if s.errors > 0 => format!("{:.0} ({} errors)", s.rps, s.errors),
        Some(s) => format!("{:.0}", s.rps),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The whole report.
pub fn render(results: &[(Kind, Result<RowResult, String>)], rate: u32, workers: u16) -> String {
    let get = |k: Kind| {
        results
            .iter()
            .find(|(kind, _)| *kind == k)
            .and_then(|(_, r)| r.as_ref().ok())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| path ({workers} worker{}) | wrk HTTP/1.1 req/s | h2load HTTP/2 req/s | p50 / p99 ms at {rate} req/s | proxy CPU s per 1000 req (wrk / at {rate} req/s) | proxy RSS MiB idle / load |",
        if workers == 1 { "" } else { "s" }
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (kind, r) in results {
        let Ok(r) = r else {
            let _ = writeln!(out, "| {} | failed | | | | |", kind.label());
            continue;
        };
        let errors = if r.paced.errors > 0 {
            format!(" ({} errors)", r.paced.errors)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {}{errors} | {} / {} | {} / {} |",
            kind.label(),
            sat(r.wrk),
            sat(r.h2),
            ms(r.paced.p50),
            ms(r.paced.p99),
            opt(r.cpu_wrk(), 3),
            opt(r.cpu_paced(), 3),
            opt(r.rss_mib(|g| g.idle_kib), 1),
            opt(r.rss_mib(|g| g.load_kib), 1),
        );
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| path | HTTP/1.1 vs direct / nginx / haproxy | HTTP/2 vs direct / nginx / haproxy | p99 vs nginx / haproxy | CPU per req (paced) vs nginx / haproxy |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let h1 = |k: Kind| get(k).and_then(|r| r.wrk).map(|s| s.rps);
    let h2 = |k: Kind| get(k).and_then(|r| r.h2).map(|s| s.rps);
    let p99 = |k: Kind| get(k).map(|r| r.paced.p99.as_secs_f64());
    let cpu = |k: Kind| get(k).and_then(RowResult::cpu_paced);
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Direct) {
        let _ = writeln!(
            out,
            "| {} | {} / {} / {} | {} / {} / {} | {} / {} | {} / {} |",
            kind.label(),
            ratio(h1(kind), h1(Kind::Direct)),
            ratio(h1(kind), h1(Kind::Nginx)),
            ratio(h1(kind), h1(Kind::Haproxy)),
            ratio(h2(kind), h2(Kind::Direct)),
            ratio(h2(kind), h2(Kind::Nginx)),
            ratio(h2(kind), h2(Kind::Haproxy)),
            ratio(p99(kind), p99(Kind::Nginx)),
            ratio(p99(kind), p99(Kind::Haproxy)),
            ratio(cpu(kind), cpu(Kind::Nginx)),
            ratio(cpu(kind), cpu(Kind::Haproxy)),
        );
    }

    let _ = writeln!(out);
    for (kind, r) in results {
        let Ok(r) = r else { continue };
        for g in &r.groups {
            let who = if r.groups.len() == 1 {
                kind.label().to_string()
            } else {
                format!("{}: {}", kind.label(), g.name)
            };
            let _ = writeln!(
                out,
                "- {who}: CPU s {:.2} (wrk) {:.2} (h2load) {:.2} (paced); RSS idle {:.1} MiB, load {:.1} MiB, VmHWM {:.1} MiB",
                g.cpu_wrk,
                g.cpu_h2,
                g.cpu_paced,
                g.idle_kib as f64 / 1024.0,
                g.load_kib as f64 / 1024.0,
                g.hwm_kib as f64 / 1024.0,
            );
        }
    }

    let _ = writeln!(out);
    let _ = writeln!(out, "Goals (one shim against nginx and haproxy at {workers} worker(s); memory and CPU per shim process):");
    let shim = Kind::Shim;
    for (name, metric, higher_better, unit) in [
        (
            "HTTP/1.1 throughput",
            &h1 as &dyn Fn(Kind) -> Option<f64>,
            true,
            "req/s",
        ),
        ("HTTP/2 throughput", &h2, true, "req/s"),
        ("p99 latency", &|k| p99(k).map(|s| s * 1000.0), false, "ms"),
    ] {
        for other in [Kind::Nginx, Kind::Haproxy] {
            let line = match (metric(shim), metric(other)) {
                (Some(a), Some(b)) => {
                    let ok = if higher_better { a > b } else { a < b };
                    format!(
                        "- shim beats {} on {name}: {a:.2} vs {b:.2} {unit}: {}",
                        other.label(),
                        met(ok)
                    )
                }
                _ => format!("- shim beats {} on {name}: not measured", other.label()),
            };
            let _ = writeln!(out, "{line}");
        }
    }
    // Every shim process with the paced row's request count, for the
    // per-shim goals.
    let shims: Vec<(String, &GroupResult, u64)> = [Kind::Shim, Kind::ShimMtls]
        .into_iter()
        .filter_map(|k| Some((k, get(k)?)))
        .flat_map(|(k, r)| {
            r.groups
                .iter()
                .map(move |g| (format!("{} ({})", k.label(), g.name), g, r.paced.ok))
        })
        .collect();
    let limit = |label: &str, max: f64, f: &dyn Fn(&GroupResult, u64) -> f64, digits: usize| {
        let all: Vec<String> = shims
            .iter()
            .map(|(n, g, ok)| format!("{n} {:.digits$}", f(g, *ok)))
            .collect();
        let ok = !shims.is_empty() && shims.iter().all(|(_, g, ok)| f(g, *ok) <= max);
        format!("- {label}: {}: {}", all.join(", "), met(ok))
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        out,
        "{}",
        limit(
            &format!("shim RSS idle <= 20 MB ({:.1} MiB)", 20.0 * MB_IN_MIB),
            20.0 * MB_IN_MIB,
            &|g, _| mib(g.idle_kib),
            1
        )
    );
    let _ = writeln!(
        out,
        "{}",
        limit(
            &format!(
                "shim RSS under load (VmHWM) <= 30 MB ({:.1} MiB)",
                30.0 * MB_IN_MIB
            ),
            30.0 * MB_IN_MIB,
            &|g, _| mib(g.hwm_kib.max(g.load_kib)),
            1
        )
    );
    let _ = writeln!(
        out,
        "{}",
        limit(
            &format!(
                "<= 0.05 vCPU per 1000 req/s per shim (CPU s per 1000 requests at {rate} req/s)"
            ),
            0.05,
            &|g, ok| if ok == 0 {
                f64::INFINITY
            } else {
                g.cpu_paced / (ok as f64 / 1000.0)
            },
            3
        )
    );
    let _ = writeln!(
        out,
        "- for reference: Istio 1.24's sidecar 0.20 vCPU and 60 MB per 1000 req/s; Linkerd's proxy about 18-26 MB"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(rps: f64, p99_ms: u64, cpu: f64, kib: u64, groups: usize) -> RowResult {
        RowResult {
            wrk: Some(Saturation {
                rps,
                requests: (rps * 5.0) as u64,
                errors: 0,
            }),
            h2: Some(Saturation {
                rps: rps * 2.0,
                requests: (rps * 10.0) as u64,
                errors: 0,
            }),
            paced: Paced {
                ok: 10_000,
                errors: 0,
                p50: Duration::from_micros(200),
                p99: Duration::from_millis(p99_ms),
                max: Duration::from_millis(p99_ms * 2),
            },
            groups: (0..groups)
                .map(|i| GroupResult {
                    name: format!("p{i}"),
                    idle_kib: kib,
                    load_kib: kib * 2,
                    hwm_kib: kib * 2,
                    cpu_wrk: cpu,
                    cpu_h2: cpu,
                    cpu_paced: cpu,
                })
                .collect(),
        }
    }

    #[test]
    fn the_report_has_every_row_ratios_and_goals() {
        let results = vec![
            (Kind::Direct, Ok(row(40_000.0, 1, 0.0, 0, 0))),
            (Kind::Shim, Ok(row(30_000.0, 2, 0.3, 8 * 1024, 1))),
            (Kind::Nginx, Ok(row(20_000.0, 3, 0.5, 4 * 1024, 1))),
            (Kind::Haproxy, Ok(row(25_000.0, 3, 0.4, 6 * 1024, 1))),
            (Kind::ShimMtls, Err("server shim exited".into())),
        ];
        let text = render(&results, 1000, 1);
        assert!(
            text.contains(
                "| mesh-shim | 30000 | 60000 | 0.20 / 2.00 | 0.002 / 0.030 | 8.0 / 16.0 |"
            ),
            "{text}"
        );
        assert!(text.contains("| 2 shims, mTLS | failed |"), "{text}");
        // 30000 / 40000 direct, / 20000 nginx, / 25000 haproxy.
        assert!(
            text.contains("| mesh-shim | 0.75 / 1.50 / 1.20 |"),
            "{text}"
        );
        assert!(
            text.contains(
                "shim beats nginx on HTTP/1.1 throughput: 30000.00 vs 20000.00 req/s: met"
            ),
            "{text}"
        );
        assert!(
            text.contains("shim beats haproxy on p99 latency: 2.00 vs 3.00 ms: met"),
            "{text}"
        );
        assert!(
            text.contains("shim RSS idle <= 20 MB (19.1 MiB): mesh-shim (p0) 8.0: met"),
            "{text}"
        );
        assert!(text.contains("mesh-shim (p0) 0.030: met"), "{text}");
    }
}
