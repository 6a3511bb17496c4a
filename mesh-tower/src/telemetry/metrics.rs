//! Istio's standard request metrics, stored as plain atomics per series
//! and written out through prometheus-client at scrape time.
//!
//! A series is one set of label values. The request path finds its series
//! once per distinct edge and response (a per-thread cache in
//! [`super::record`]) and then only adds to atomics: no label hashing, no
//! lock. The table of every series is locked only to add a new one and to
//! scrape.
//!
//! Not here: which labels a request gets ([`super::record`]), and the
//! exposition format ([`super::registry`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use mesh_core::sync::LockExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Envoy's default histogram buckets, which Istio's dashboards are built on.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The bounds in thousandths, so an observation is placed by integer
/// comparisons.
const BOUNDS_MILLI: [u64; 19] = {
    let mut out = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        out[i] = (BUCKETS[i] * 1000.0) as u64;
        i += 1;
    }
    out
};

/// The labels of HTTP and gRPC request series, in the order Istio's
/// proxies write them.
pub const REQUEST_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// One histogram: per-bucket counts (the last is above every bound) and
/// the sum in thousandths of the unit.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; 20],
    sum_milli: AtomicU64,
}

impl Histogram {
    /// Records a value given in thousandths of the unit (microseconds for
    /// a duration in milliseconds).
    #[inline]
    pub fn observe_milli(&self, v: u64) {
        let i = BOUNDS_MILLI.iter().position(|b| v <= *b).unwrap_or(19);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_milli.fetch_add(v, Relaxed);
    }

    /// Records a whole value (bytes).
    #[inline]
    pub fn observe(&self, v: u64) {
        self.observe_milli(v.saturating_mul(1000));
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Writes the sum of `parts` (one histogram kept in shards).
    fn encode_merged<'a>(
        parts: impl Iterator<Item = &'a Histogram>,
        m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    ) -> fmt::Result {
        let mut buckets = [(0.0, 0u64); 20];
        for (i, b) in buckets.iter_mut().enumerate() {
            b.0 = BUCKETS.get(i).copied().unwrap_or(f64::MAX);
        }
        let mut sum_milli = 0u64;
        for h in parts {
            for (i, b) in h.buckets.iter().enumerate() {
                buckets[i].1 += b.load(Relaxed);
            }
            sum_milli = sum_milli.wrapping_add(h.sum_milli.load(Relaxed));
        }
        let count = buckets.iter().map(|(_, c)| c).sum();
        m.encode_histogram::<NoLabelSet>(sum_milli as f64 / 1000.0, count, &buckets, None)
    }
}

/// The counters of one series that one group of threads writes: each
/// thread adds to its own shard (its own cache lines), so two cores
/// reporting the same edge do not pass lines back and forth on every
/// request; a scrape adds the shards up.
#[repr(align(64))]
#[derive(Default)]
pub struct Shard {
    /// `istio_requests_total`.
    pub requests: AtomicU64,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// `istio_request_bytes`.
    pub request_bytes: Histogram,
    /// `istio_response_bytes`.
    pub response_bytes: Histogram,
    /// `istio_request_messages_total` (gRPC).
    pub request_messages: AtomicU64,
    /// `istio_response_messages_total` (gRPC).
    pub response_messages: AtomicU64,
    /// Which message counters a gRPC request recorded into (bit 0:
    /// request, bit 1: response), so a stream that sent none still shows.
    pub grpc: AtomicU64,
}

/// Shards per series: enough for the cores a process usually runs on.
fn shard_count() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 16)
    })
}

/// This thread's shard index (threads take them in turn).
fn shard_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) as usize;
    }
    INDEX.with(|i| *i % shard_count())
}

/// One request series: Istio's request metrics for one set of labels.
pub struct Series {
    values: Box<[Arc<str>]>,
    shards: Box<[Shard]>,
}

impl Series {
    /// The shard the calling thread adds to.
    #[inline]
    pub fn shard(&self) -> &Shard {
        &self.shards[shard_index() % self.shards.len()]
    }

    fn total(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    /// `istio_requests_total` so far.
    pub fn requests(&self) -> u64 {
        self.total(|s| s.requests.load(Relaxed))
    }

    /// The label values, in [`REQUEST_LABELS`] order (or with an override
    /// policy's changes, in the names the table was built with).
    pub fn values(&self) -> &[Arc<str>] {
        &self.values
    }
}

struct Labels<'a> {
    names: &'a [Arc<str>],
    values: &'a [Arc<str>],
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        for (n, v) in self.names.iter().zip(self.values.iter()) {
            prometheus_client::encoding::EncodeLabel::encode(
                &(&**n, &**v),
                encoder.encode_label(),
            )?;
        }
        Ok(())
    }
}

/// Which of Istio's request metrics are written (the Telemetry API can
/// turn each off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enabled {
    /// `istio_requests_total`.
    pub requests: bool,
    /// `istio_request_duration_milliseconds`.
    pub duration: bool,
    /// `istio_request_bytes`.
    pub request_bytes: bool,
    /// `istio_response_bytes`.
    pub response_bytes: bool,
    /// `istio_request_messages_total`.
    pub request_messages: bool,
    /// `istio_response_messages_total`.
    pub response_messages: bool,
}

impl Enabled {
    /// True when any request metric is recorded.
    pub fn any(&self) -> bool {
        self.requests
            || self.duration
            || self.request_bytes
            || self.response_bytes
            || self.request_messages
            || self.response_messages
    }
}

impl Default for Enabled {
    fn default() -> Self {
        Self {
            requests: true,
            duration: true,
            request_bytes: true,
            response_bytes: true,
            request_messages: true,
            response_messages: true,
        }
    }
}

/// Label names, shared by every series that has them.
pub type Names = Arc<[Arc<str>]>;

/// A series' identity: its label names and values.
type SeriesKey = (Names, Box<[Arc<str>]>);

/// Every request series of a process, keyed by label names and values.
#[derive(Default)]
pub struct RequestMetrics {
    series: Mutex<HashMap<SeriesKey, Arc<Series>>>,
    names: Mutex<HashMap<Vec<Arc<str>>, Names>>,
}

impl fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("series", &self.series.locked().len())
            .finish()
    }
}

impl RequestMetrics {
    /// The series for these label names and values, made on first use.
    pub fn series(&self, names: &Names, values: Vec<Arc<str>>) -> Arc<Series> {
        let values = values.into_boxed_slice();
        let mut t = self.series.locked();
        let key = (names.clone(), values);
        if let Some(s) = t.get(&key) {
            return s.clone();
        }
        let s = Arc::new(Series {
            values: key.1.clone(),
            shards: (0..shard_count()).map(|_| Shard::default()).collect(),
        });
        t.insert(key, s.clone());
        s
    }

    /// The shared form of a list of label names (tag overrides make new
    /// ones; each distinct list is kept once).
    pub fn names(&self, names: Vec<Arc<str>>) -> Names {
        let mut t = self.names.locked();
        if let Some(n) = t.get(&names) {
            return n.clone();
        }
        let n: Names = names.iter().cloned().collect();
        t.insert(names, n.clone());
        n
    }

    fn snapshot(&self) -> Vec<(Names, Arc<Series>)> {
        let mut all: Vec<_> = self
            .series
            .locked()
            .iter()
            .map(|((n, _), s)| (n.clone(), s.clone()))
            .collect();
        // A stable order, so consecutive scrapes diff cleanly.
        all.sort_by(|a, b| a.1.values.cmp(&b.1.values));
        all
    }
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let all = self.snapshot();
        type Write =
            fn(&Series, &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result;
        let families: [(&str, &str, MetricType, Write); 6] = [
            (
                "istio_requests",
                "Requests handled, by Istio's standard labels.",
                MetricType::Counter,
                |s, m| m.encode_counter::<NoLabelSet, _, u64>(&s.requests(), None),
            ),
            (
                "istio_request_duration_milliseconds",
                "Request duration, until the response's last byte, in milliseconds.",
                MetricType::Histogram,
                |s, m| Histogram::encode_merged(s.shards.iter().map(|h| &h.duration), m),
            ),
            (
                "istio_request_bytes",
                "Request body sizes in bytes.",
                MetricType::Histogram,
                |s, m| Histogram::encode_merged(s.shards.iter().map(|h| &h.request_bytes), m),
            ),
            (
                "istio_response_bytes",
                "Response body sizes in bytes.",
                MetricType::Histogram,
                |s, m| Histogram::encode_merged(s.shards.iter().map(|h| &h.response_bytes), m),
            ),
            (
                "istio_request_messages",
                "gRPC messages sent by the client.",
                MetricType::Counter,
                |s, m| {
                    let n = s.total(|h| h.request_messages.load(Relaxed));
                    m.encode_counter::<NoLabelSet, _, u64>(&n, None)
                },
            ),
            (
                "istio_response_messages",
                "gRPC messages sent by the server.",
                MetricType::Counter,
                |s, m| {
                    let n = s.total(|h| h.response_messages.load(Relaxed));
                    m.encode_counter::<NoLabelSet, _, u64>(&n, None)
                },
            ),
        ];
        for (i, (name, help, ty, write)) in families.into_iter().enumerate() {
            // A series shows in the families it recorded into (a metric
            // with its own tag overrides has series of its own), and a
            // family with no series is left out, as Envoy does.
            let rows: Vec<_> = all
                .iter()
                .filter(|(_, s)| match i {
                    0 => s.requests() > 0,
                    1 => s.total(|h| h.duration.count()) > 0,
                    2 => s.total(|h| h.request_bytes.count()) > 0,
                    3 => s.total(|h| h.response_bytes.count()) > 0,
                    4 => s.total(|h| h.grpc.load(Relaxed) & 1) != 0,
                    _ => s.total(|h| h.grpc.load(Relaxed) & 2) != 0,
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let mut m = encoder.encode_descriptor(name, help, None, ty)?;
            for (names, s) in rows {
                let labels = Labels {
                    names,
                    values: &s.values,
                };
                let mut f = m.encode_family(&labels)?;
                write(s, &mut f)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Series")
            .field("values", &self.values)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_envoys_buckets() {
        let h = Histogram::default();
        h.observe_milli(400); // 0.4 ms
        h.observe_milli(500); // exactly 0.5 ms: le="0.5"
        h.observe_milli(7_000); // 7 ms
        h.observe(4_000_000); // above every bound
        let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[3], 1);
        assert_eq!(counts[19], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_milli.load(Relaxed), 400 + 500 + 7_000 + 4_000_000_000);
    }
}
