//! The demo's telemetry summary, read back from the workloads' own
//! `/stats/prometheus` expositions (classic text format): requests per
//! edge and response code, as each end reported them. The same small
//! reader serves the tests that check an exposition.
//!
//! Not a general Prometheus parser: it reads the sample lines the SDK
//! writes (`name{label="value",...} value`), escapes included.

use std::collections::BTreeMap;

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`istio_requests_total`, `..._bucket`, ...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or `""` when it has none.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// The samples named `name` in a classic text exposition; lines that do
/// not parse are skipped.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .filter(|s| s.name == name)
        .collect()
}

/// Parses `name{k="v",...} value [timestamp]`.
fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample {
                name: name.to_string(),
                labels: BTreeMap::new(),
                value: value.split(' ').next()?.parse().ok()?,
            });
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.char_indices();
    let end = loop {
        // key="value" pairs, comma separated, until the closing brace.
        let mut key = String::new();
        let close = loop {
            match chars.next()? {
                (_, '=') => break None,
                (i, '}') if key.is_empty() => break Some(i),
                (_, ',') | (_, ' ') if key.is_empty() => {}
                (_, c) => key.push(c),
            }
        };
        if let Some(i) = close {
            break i;
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    };
    let value = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Requests on one edge with one response code, as each end counted them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeCount {
    /// `source_workload`.
    pub source: String,
    /// `destination_workload`.
    pub destination: String,
    /// `response_code`.
    pub code: String,
    /// `istio_requests_total{reporter="source"}`.
    pub by_source: u64,
    /// `istio_requests_total{reporter="destination"}`.
    pub by_destination: u64,
    /// `connection_security_policy` as the destination saw it.
    pub security: String,
}

/// Sums `istio_requests_total` of every exposition in `texts` by
/// (source workload, destination workload, response code).
pub fn edges<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<EdgeCount> {
    let mut by_edge: BTreeMap<(String, String, String), EdgeCount> = BTreeMap::new();
    for text in texts {
        for s in samples(text, "istio_requests_total") {
            let key = (
                s.label("source_workload").to_string(),
                s.label("destination_workload").to_string(),
                s.label("response_code").to_string(),
            );
            let e = by_edge.entry(key.clone()).or_insert_with(|| EdgeCount {
                source: key.0,
                destination: key.1,
                code: key.2,
                by_source: 0,
                by_destination: 0,
                security: String::new(),
            });
            // Counters are whole numbers of requests.
            let n = s.value as u64;
            match s.label("reporter") {
                "source" => e.by_source += n,
                "destination" => {
                    e.by_destination += n;
                    e.security = s.label("connection_security_policy").to_string();
                }
                _ => {}
            }
        }
    }
    by_edge.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_escapes_and_values() {
        let text = "# HELP x X.\n# TYPE x counter\n\
            istio_requests_total{reporter=\"source\",source_workload=\"a\\\"b\",response_code=\"200\"} 3\n\
            istio_requests_total{reporter=\"destination\",source_workload=\"a\\\"b\",response_code=\"200\",connection_security_policy=\"mutual_tls\"} 3 1700000000\n\
            up 1\n";
        let s = samples(text, "istio_requests_total");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("source_workload"), "a\"b");
        assert_eq!(s[1].value, 3.0);
        assert_eq!(samples(text, "up")[0].value, 1.0);
        let e = edges([text]);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].by_source, e[0].by_destination), (3, 3));
        assert_eq!(e[0].security, "mutual_tls");
    }
}
