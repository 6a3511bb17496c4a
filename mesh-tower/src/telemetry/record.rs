//! One request's telemetry: what is known when it starts ([`Pending`]),
//! and, when its response ends, the series it is counted in and the
//! access log line it writes.
//!
//! Series are found through a per-thread cache keyed by pointers (the
//! service host and the peer are interned `Arc`s, held by the cache so an
//! address is never reused while cached), so the request path hashes no
//! label; only the first request of an edge builds its label values.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::access_log::{self, AccessInfo};
use super::metrics::Series;
use super::peer::{Peer, UNKNOWN};
use super::{Reporter, Telemetry};
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
    pub(super) telemetry: Telemetry,
    pub(super) reporter: Reporter,
    pub(super) start: Instant,
    pub(super) protocol: Protocol,
    /// The destination service host (fully qualified), or `unknown`.
    pub(super) service: Arc<str>,
    /// The workload at the other end.
    pub(super) peer: Arc<Peer>,
    /// The other end's verified principal.
    pub(super) principal: Option<Arc<str>>,
    /// Whether the request came over mesh mTLS (server side).
    pub(super) mtls: bool,
    /// The request body's size when known up front.
    pub(super) request_bytes: Option<u64>,
    pub(super) access: Option<Box<AccessInfo>>,
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
    peer: Arc<Peer>,
    principal: Option<Arc<str>>,
}

thread_local! {
    static SERIES: ThreadCache<(Key, Pins), Arc<Series>> = const { ThreadCache::new() };
}

fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b)
}

impl Pending {
    /// Counts the request and writes its access log line.
    pub fn finish(self, outcome: Outcome) {
        let request_bytes = self.request_bytes.unwrap_or(outcome.request_bytes);
        let elapsed = self.start.elapsed();
        let series = self.series(&outcome);
        series.requests.fetch_add(1, Relaxed);
        series
            .duration
            .observe_milli(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        series.request_bytes.observe(request_bytes);
        series.response_bytes.observe(outcome.response_bytes);
        if self.protocol == Protocol::Grpc {
            series
                .request_messages
                .fetch_add(outcome.request_messages, Relaxed);
            series
                .response_messages
                .fetch_add(outcome.response_messages, Relaxed);
        }
        if let Some(access) = self.access {
            access_log::write(
                &access,
                self.reporter,
                &outcome,
                request_bytes,
                elapsed,
                self.telemetry.inner.access_log_json(),
            );
        }
    }

    fn series(&self, o: &Outcome) -> Arc<Series> {
        let key = Key {
            telemetry: self.telemetry.inner.id,
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
                    && same(&p.peer, &self.peer)
                    && match (&p.principal, &self.principal) {
                        (Some(a), Some(b)) => same(a, b),
                        (None, None) => true,
                        _ => false,
                    })
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
        let t = &self.telemetry.inner;
        let unknown: Arc<str> = Arc::from(UNKNOWN);
        let remote_principal = self.principal.clone().unwrap_or_else(|| unknown.clone());
        let (src, src_principal, dst, dst_principal) = match self.reporter {
            Reporter::Source => (&t.local, t.principal.clone(), &self.peer, remote_principal),
            Reporter::Destination => (&self.peer, remote_principal, &t.local, t.principal.clone()),
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
        let values: Vec<Arc<str>> = vec![
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
        ];
        t.metrics.requests().series(&t.names, values)
    }
}

/// When a request started, for access logs.
pub(super) fn now() -> SystemTime {
    SystemTime::now()
}
