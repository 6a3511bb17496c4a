//! One request's telemetry: what is known when it starts ([`Pending`]),
//! and, when its response ends, the series it is counted in, the access
//! log lines it writes and its span.
//!
//! Under a policy without tag overrides, series are found through a
//! per-thread cache keyed by pointers (the service host and the peer are
//! interned `Arc`s, held by the cache so an address is never reused while
//! cached): the request path hashes no label and only the first request
//! of an edge builds its label values. Tag overrides are CEL evaluated
//! per request, so those series are looked up by their values.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use mesh_core::config::telemetry::IstioMetric;
use mesh_core::telemetry::{
    self as policy, Attributes, HeaderLookup, Headers, TagAction, TelemetryPolicy,
};

use super::access_log::{self, AccessInfo, Line};
use super::metrics::Series;
use super::peer::{Peer, UNKNOWN};
use super::plan::{direction, Plan};
use super::span::SpanState;
use super::{Inner, Reporter};
use crate::handle::Handle;
use crate::thread_cache::ThreadCache;

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 that is not gRPC.
    Http,
    /// gRPC.
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A response flag string, short enough to keep inline (`-`, `UO`,
/// `URX,UF`); longer ones are cut, which no Envoy flag set reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    len: u8,
    bytes: [u8; 23],
}

impl Flags {
    /// No flag: `-`.
    pub const NONE: Flags = Flags {
        len: 1,
        bytes: *b"-\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    };

    /// Flags from the `x-mesh-response-flags` value.
    pub fn new(s: &[u8]) -> Flags {
        if s.is_empty() {
            return Flags::NONE;
        }
        let mut f = Flags {
            len: 0,
            bytes: [0; 23],
        };
        let n = s.len().min(23);
        f.bytes[..n].copy_from_slice(&s[..n]);
        f.len = n as u8;
        f
    }

    /// The flags as written in labels and logs.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("-")
    }
}

/// What the telemetry layer knows when a request starts.
pub struct Pending {
    pub(super) telemetry: Handle<Inner>,
    pub(super) reporter: Reporter,
    pub(super) plan: Plan,
    /// The policy, kept when the plan needs it at the end (tags, logs).
    pub(super) policy: Option<Handle<TelemetryPolicy>>,
    pub(super) start: Instant,
    pub(super) protocol: Protocol,
    /// The destination service host (fully qualified), or `unknown`.
    pub(super) service: Arc<str>,
    /// The workload at the other end, when it said.
    pub(super) peer: Option<Arc<Peer>>,
    /// The other end's verified principal.
    pub(super) principal: Option<Arc<str>>,
    /// Whether the request came over mesh mTLS (server side).
    pub(super) mtls: bool,
    /// The request body's size when known up front.
    pub(super) request_bytes: Option<u64>,
    /// The request as logs and expressions see it.
    pub(super) access: Option<Box<AccessInfo>>,
    /// The span, when this request is traced.
    pub(super) span: Option<Box<SpanState>>,
}

/// How a response ended, from its head and its body.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// HTTP status (0 when no response came).
    pub code: u16,
    /// `grpc-status`, when the response had one.
    pub grpc_status: Option<u16>,
    /// Response flags.
    pub flags: Flags,
    /// Request body bytes, when counted while streaming.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// gRPC messages the client sent.
    pub request_messages: u64,
    /// gRPC messages the server sent.
    pub response_messages: u64,
}

#[derive(PartialEq, Eq)]
struct Key {
    telemetry: u64,
    reporter: Reporter,
    protocol: Protocol,
    code: u16,
    grpc: Option<u16>,
    flags: Flags,
    mtls: bool,
}

struct Pins {
    service: Arc<str>,
    peer: Option<Arc<Peer>>,
    principal: Option<Arc<str>>,
}

thread_local! {
    static SERIES: ThreadCache<(Key, Pins), Arc<Series>> = const { ThreadCache::new() };
}

fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b)
}

fn same_opt<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Request headers for CEL.
struct HeaderMapLookup<'a>(&'a HeaderMap);

impl HeaderLookup for HeaderMapLookup<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.0.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut all = format!("{first},{second}");
                for v in values {
                    all.push(',');
                    all.push_str(v);
                }
                Some(Cow::Owned(all))
            }
        }
    }
}

impl Pending {
    /// Counts the request, writes its access log lines and ends its span.
    pub fn finish(mut self, outcome: Outcome) {
        let request_bytes = self.request_bytes.unwrap_or(outcome.request_bytes);
        let took = self.start.elapsed();
        if self.plan.metrics.any() {
            if self.plan.tagged {
                self.record_tagged(&outcome, request_bytes, took);
            } else {
                let series = self.series(&outcome);
                self.record(&series, &outcome, request_bytes, took, None);
            }
        }
        if self.plan.access {
            self.log(&outcome, request_bytes, took);
        }
        if let Some(span) = self.span.take() {
            span.end(&self, &outcome, request_bytes);
        }
    }

    /// Adds the request to `series`: every enabled metric, or `only` one.
    fn record(
        &self,
        series: &Series,
        o: &Outcome,
        request_bytes: u64,
        took: Duration,
        only: Option<IstioMetric>,
    ) {
        let m = &self.plan.metrics;
        let series = series.shard();
        let this = |metric: IstioMetric, on: bool| on && only.is_none_or(|o| o == metric);
        if this(IstioMetric::RequestCount, m.requests) {
            series.requests.fetch_add(1, Relaxed);
        }
        if this(IstioMetric::RequestDuration, m.duration) {
            series
                .duration
                .observe_milli(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
        if this(IstioMetric::RequestSize, m.request_bytes) {
            series.request_bytes.observe(request_bytes);
        }
        if this(IstioMetric::ResponseSize, m.response_bytes) {
            series.response_bytes.observe(o.response_bytes);
        }
        if self.protocol == Protocol::Grpc {
            if this(IstioMetric::GrpcRequestMessages, m.request_messages) {
                series
                    .request_messages
                    .fetch_add(o.request_messages, Relaxed);
                series.grpc.fetch_or(1, Relaxed);
            }
            if this(IstioMetric::GrpcResponseMessages, m.response_messages) {
                series
                    .response_messages
                    .fetch_add(o.response_messages, Relaxed);
                series.grpc.fetch_or(2, Relaxed);
            }
        }
    }

    fn series(&self, o: &Outcome) -> Arc<Series> {
        let key = Key {
            telemetry: self.telemetry.id,
            reporter: self.reporter,
            protocol: self.protocol,
            code: o.code,
            grpc: o.grpc_status,
            flags: o.flags,
            mtls: self.mtls,
        };
        let hit = SERIES.with(|c| {
            c.find(|(k, p), s| {
                (*k == key
                    && same(&p.service, &self.service)
                    && same_opt(&p.peer, &self.peer)
                    && same_opt(&p.principal, &self.principal))
                .then(|| s.clone())
            })
        });
        if let Some(s) = hit {
            return s;
        }
        let s = self.new_series(o);
        let pins = Pins {
            service: self.service.clone(),
            peer: self.peer.clone(),
            principal: self.principal.clone(),
        };
        SERIES.with(|c| c.insert((key, pins), s.clone(), |_| true));
        s
    }

    #[cold]
    #[inline(never)]
    fn new_series(&self, o: &Outcome) -> Arc<Series> {
        let t = &self.telemetry;
        t.metrics.requests().series(&t.names, self.label_values(o))
    }

    /// The standard labels' values, in `REQUEST_LABELS` order.
    fn label_values(&self, o: &Outcome) -> Vec<Arc<str>> {
        let t = &self.telemetry;
        let remote_principal = self.principal.clone().unwrap_or_else(|| t.unknown.clone());
        let remote = self.peer.clone().unwrap_or_else(Peer::unknown);
        let (src, src_principal, dst, dst_principal) = match self.reporter {
            Reporter::Source => (&t.local, t.principal.clone(), &remote, remote_principal),
            Reporter::Destination => (&remote, remote_principal, &t.local, t.principal.clone()),
        };
        let (service_name, service_namespace) = self.telemetry.service_parts(&self.service);
        let security = match self.reporter {
            // A client cannot tell what the server made of its
            // connection; Istio's source reports say unknown too.
            Reporter::Source => UNKNOWN,
            Reporter::Destination if self.mtls => "mutual_tls",
            Reporter::Destination => "none",
        };
        let reporter = match self.reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        };
        vec![
            reporter.into(),
            src.workload.clone(),
            src.canonical_service.clone(),
            src.canonical_revision.clone(),
            src.namespace.clone(),
            src_principal,
            src.app.clone(),
            src.version.clone(),
            src.cluster.clone(),
            dst.workload.clone(),
            dst.namespace.clone(),
            dst_principal,
            dst.app.clone(),
            dst.version.clone(),
            self.service.clone(),
            dst.canonical_service.clone(),
            dst.canonical_revision.clone(),
            service_name,
            service_namespace,
            dst.cluster.clone(),
            self.protocol.label().into(),
            o.code.to_string().into(),
            o.grpc_status
                .map_or_else(|| Arc::from(""), |g| Arc::from(g.to_string())),
            o.flags.as_str().into(),
            security.into(),
        ]
    }

    /// The attributes CEL expressions read.
    fn attributes<'a>(
        &'a self,
        o: &Outcome,
        request_bytes: u64,
        took: Duration,
        headers: &'a HeaderMapLookup<'a>,
    ) -> Attributes<'a> {
        let a = self.access.as_deref();
        Attributes {
            request: policy::Request {
                path: a.map(|a| a.path.as_str()),
                host: a.and_then(|a| a.authority.as_deref()),
                scheme: a.and_then(|a| a.scheme.as_deref()),
                method: a.map(|a| a.method.as_str()),
                headers: Headers::Lookup(headers),
                id: None,
                protocol: a.map(|a| a.protocol),
                time: a.and_then(|a| a.start),
                duration: Some(took),
                size: Some(request_bytes),
                total_size: None,
            },
            response: policy::Response {
                code: Some(o.code),
                code_details: Some(access_log::details(o)),
                flags: None,
                grpc_status: o.grpc_status.map(i32::from),
                headers: Headers::None,
                trailers: Headers::None,
                size: Some(o.response_bytes),
                total_size: None,
            },
            connection: policy::Connection {
                mtls: Some(self.mtls),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Each enabled metric with its own labels: the standard ones with
    /// the policy's tag overrides applied (in tag name order, as Istio).
    #[cold]
    fn record_tagged(&self, o: &Outcome, request_bytes: u64, took: Duration) {
        let Some(policy) = &self.policy else {
            return;
        };
        let t = &self.telemetry;
        let empty = HeaderMap::new();
        let headers = HeaderMapLookup(self.access.as_deref().map_or(&empty, |a| &a.headers));
        let attrs = self.attributes(o, request_bytes, took, &headers);
        let base = self.label_values(o);
        let d = policy.direction(direction(self.reporter));
        for (metric, mp) in &d.metrics.metrics {
            if !mp.enabled || !d.metrics.enabled {
                continue;
            }
            let mut names: Vec<Arc<str>> = t.names.to_vec();
            let mut values = base.clone();
            for (tag, action) in &mp.tags {
                let at = names.iter().position(|n| &**n == tag.as_str());
                match (action, at) {
                    (TagAction::Remove, Some(i)) => {
                        names.remove(i);
                        values.remove(i);
                    }
                    (TagAction::Remove, None) => {}
                    (TagAction::Upsert(expr), Some(i)) => values[i] = expr.tag_value(&attrs).into(),
                    (TagAction::Upsert(expr), None) => {
                        names.push(tag.as_str().into());
                        values.push(expr.tag_value(&attrs).into());
                    }
                }
            }
            let names = t.metrics.requests().names(names);
            let series = t.metrics.requests().series(&names, values);
            self.record(&series, o, request_bytes, took, Some(*metric));
        }
    }

    /// Writes the lines of every access log whose filter selects the
    /// request.
    fn log(&self, o: &Outcome, request_bytes: u64, took: Duration) {
        let (Some(policy), Some(info)) = (&self.policy, self.access.as_deref()) else {
            return;
        };
        let d = policy.direction(direction(self.reporter));
        let headers = HeaderMapLookup(&info.headers);
        let attrs = self.attributes(o, request_bytes, took, &headers);
        let line = Line {
            info,
            outcome: o,
            request_bytes,
            took,
        };
        for log in &d.access_logs.logs {
            if log.selects(&attrs) {
                access_log::write(&log.sink, &line, self.reporter);
            }
        }
    }
}

/// When a request started, for access logs and spans.
pub(super) fn now() -> SystemTime {
    SystemTime::now()
}
