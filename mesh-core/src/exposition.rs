//! The Prometheus text formats a scraper may ask for. Metrics are kept
//! and encoded as OpenMetrics (prometheus-client writes that); scrapers
//! and tools that do not ask for OpenMetrics (curl, promtool, older
//! Prometheus) get the classic format (0.0.4), as istiod and Envoy serve.
//! Shared by meshd's `/metrics` and the SDK's `/stats/prometheus`.

/// The content type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// True when one of the `Accept` header values asks for OpenMetrics.
pub fn wants_openmetrics<'a>(accept: impl IntoIterator<Item = &'a str>) -> bool {
    accept
        .into_iter()
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Rewrites an OpenMetrics text exposition in the classic format: a
/// counter's `HELP` and `TYPE` name its `_total` sample, and
/// OpenMetrics-only lines (`# UNIT`, `# EOF`) are left out.
pub fn openmetrics_to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_sample_and_openmetrics_lines_go() {
        let om = "# HELP x_pushes Pushes.\n# TYPE x_pushes counter\nx_pushes_total{type=\"eds\"} 1\n\
                  # HELP lat Latency.\n# TYPE lat histogram\n# UNIT lat seconds\nlat_sum 1.0\n# EOF\n";
        let c = openmetrics_to_classic(om);
        assert_eq!(
            c,
            "# HELP x_pushes_total Pushes.\n# TYPE x_pushes_total counter\nx_pushes_total{type=\"eds\"} 1\n\
             # HELP lat Latency.\n# TYPE lat histogram\nlat_sum 1.0\n"
        );
        assert!(wants_openmetrics([
            "text/plain",
            "application/openmetrics-text;version=1.0.0"
        ]));
        assert!(!wants_openmetrics(["*/*"]));
    }
}
