//! Request attributes in Envoy's vocabulary, as CEL expressions of the
//! Telemetry API read them (`request.host`, `request.headers['x-foo']`,
//! `response.code`, `connection.mtls`, `source.address`, ...; see Envoy's
//! "Attributes" page, `intro/arch_overview/advanced/attributes`).
//!
//! [`Attributes`] is plain borrowed data, `Copy`, built by the caller from
//! what it already holds (no allocation to build it). Expressions reach it
//! through lazy CEL values: `request.host` reads one field when evaluated,
//! `request.headers['x-foo']` looks one header up; nothing is copied into a
//! CEL map up front. A field left `None` is absent, as in Envoy: reading it
//! is a CEL error (`has(request.host)` is `false`).
//!
//! Derived attributes follow Envoy: `request.url_path` is `request.path`
//! without the query, `request.referer` / `request.useragent` are the
//! `referer` / `user-agent` headers, and `request.id` falls back to the
//! `x-request-id` header. Header names are matched case-insensitively;
//! several values of one header are joined with `,`.
//!
//! Istio's peer metadata (the `upstream_peer` / `downstream_peer` filter
//! state the stats filter reads) is reachable as `filter_state['name']`.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cel::common::traits::{Container, Indexer};
use cel::common::types::{CelBool, CelInt, CelString, CelUInt, Type, MAP_TYPE};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{ExecutionError, Value};

/// Header access for a caller whose headers are not a slice of pairs (an
/// `http::HeaderMap` behind a newtype, say).
pub trait HeaderLookup: Send + Sync {
    /// The value of header `name` (lowercase), several values joined with
    /// `,`; `None` when absent.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// A set of request or response headers.
#[derive(Clone, Copy, Default)]
pub enum Headers<'a> {
    /// No headers (e.g. a TCP connection, or a response not yet received).
    #[default]
    None,
    /// `(name, value)` pairs; names compare case-insensitively.
    Pairs(&'a [(&'a str, &'a str)]),
    /// Any other header store.
    Lookup(&'a dyn HeaderLookup),
}

impl<'a> Headers<'a> {
    /// The value of `name`, several values joined with `,`.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        match *self {
            Headers::None => None,
            Headers::Pairs(pairs) => {
                let mut values = pairs
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v);
                let first = values.next()?;
                let Some(second) = values.next() else {
                    return Some(Cow::Borrowed(first));
                };
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
            Headers::Lookup(l) => l.header(&name.to_ascii_lowercase()),
        }
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Headers::None => f.write_str("None"),
            Headers::Pairs(p) => f.debug_tuple("Pairs").field(p).finish(),
            Headers::Lookup(_) => f.write_str("Lookup(..)"),
        }
    }
}

/// `request.*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `request.path`: path with query.
    pub path: Option<&'a str>,
    /// `request.host`: the authority.
    pub host: Option<&'a str>,
    /// `request.scheme`.
    pub scheme: Option<&'a str>,
    /// `request.method`.
    pub method: Option<&'a str>,
    /// `request.headers`.
    pub headers: Headers<'a>,
    /// `request.id`; falls back to the `x-request-id` header.
    pub id: Option<&'a str>,
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: Option<&'a str>,
    /// `request.time`: when the first byte arrived.
    pub time: Option<SystemTime>,
    /// `request.duration`: total duration of the request.
    pub duration: Option<Duration>,
    /// `request.size`: body bytes.
    pub size: Option<u64>,
    /// `request.total_size`: bytes with headers.
    pub total_size: Option<u64>,
}

/// `response.*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Response<'a> {
    /// `response.code`: HTTP status.
    pub code: Option<u16>,
    /// `response.code_details`.
    pub code_details: Option<&'a str>,
    /// `response.flags`: Envoy's response-flag bits.
    pub flags: Option<u64>,
    /// `response.grpc_status`.
    pub grpc_status: Option<i32>,
    /// `response.headers`.
    pub headers: Headers<'a>,
    /// `response.trailers`.
    pub trailers: Headers<'a>,
    /// `response.size`: body bytes.
    pub size: Option<u64>,
    /// `response.total_size`: bytes with headers.
    pub total_size: Option<u64>,
}

/// `connection.*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connection<'a> {
    /// `connection.mtls`: the peer presented a verified certificate.
    pub mtls: Option<bool>,
    /// `connection.requested_server_name`: SNI.
    pub requested_server_name: Option<&'a str>,
    /// `connection.id`.
    pub id: Option<u64>,
}

/// `source.*`, `destination.*`, `upstream.*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    /// IP address.
    pub address: Option<&'a str>,
    /// Port.
    pub port: Option<u16>,
}

/// Everything an expression can read about one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    /// `request.*`.
    pub request: Request<'a>,
    /// `response.*`.
    pub response: Response<'a>,
    /// `connection.*`.
    pub connection: Connection<'a>,
    /// `source.*`: the downstream peer.
    pub source: Peer<'a>,
    /// `destination.*`: the local address that accepted the request.
    pub destination: Peer<'a>,
    /// `upstream.*`: the upstream host (client side).
    pub upstream: Peer<'a>,
    /// `filter_state[...]`: Istio peer metadata and other named state.
    pub filter_state: &'a [(&'a str, &'a str)],
}

impl<'a> Attributes<'a> {
    /// The CEL variable resolver over these attributes.
    pub(crate) fn resolver(&'a self) -> Resolver<'a> {
        Resolver(self)
    }
}

/// Resolves the top-level names (`request`, `response`, ...) to lazy maps.
pub(crate) struct Resolver<'a>(&'a Attributes<'a>);

impl VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let kind = match variable {
            "request" => Kind::Request,
            "response" => Kind::Response,
            "connection" => Kind::Connection,
            "source" => Kind::Source,
            "destination" => Kind::Destination,
            "upstream" => Kind::Upstream,
            "filter_state" => Kind::FilterState,
            _ => return None,
        };
        Some(CowVal::owned(Group {
            kind,
            attrs: self.0,
        }))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Request,
    Response,
    Connection,
    Source,
    Destination,
    Upstream,
    FilterState,
}

/// One attribute group seen as a CEL map whose entries are read on access.
#[derive(Debug, Clone, Copy)]
struct Group<'a> {
    kind: Kind,
    attrs: &'a Attributes<'a>,
}

/// A header set seen as a CEL map.
#[derive(Debug, Clone, Copy)]
struct HeaderMap<'a>(Headers<'a>);

type Boxed<'a> = Box<dyn Val + 'a>;

fn string<'a>(v: Option<&'a str>) -> Option<Boxed<'a>> {
    v.map(|s| Box::new(CelString::from(s)) as Boxed<'a>)
}

fn cow<'a>(v: Option<Cow<'a, str>>) -> Option<Boxed<'a>> {
    v.map(|c| match c {
        Cow::Borrowed(s) => Box::new(CelString::from(s)) as Boxed<'a>,
        Cow::Owned(s) => Box::new(CelString::from(s)) as Boxed<'a>,
    })
}

fn int<'a>(v: Option<i64>) -> Option<Boxed<'a>> {
    v.map(|i| Box::new(CelInt::from(i)) as Boxed<'a>)
}

fn uint<'a>(v: Option<u64>) -> Option<Boxed<'a>> {
    v.map(|i| Box::new(CelUInt::from(i)) as Boxed<'a>)
}

fn size<'a>(v: Option<u64>) -> Option<Boxed<'a>> {
    int(v.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
}

fn from_value<'a>(v: Option<Value>) -> Option<Boxed<'a>> {
    v.and_then(|v| Boxed::<'static>::try_from(v).ok())
        .map(|b| b as Boxed<'a>)
}

fn timestamp(t: SystemTime) -> Option<Value> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    let secs = i64::try_from(since.as_secs()).ok()?;
    let utc = chrono::DateTime::from_timestamp(secs, since.subsec_nanos())?;
    Some(Value::Timestamp(utc.fixed_offset()))
}

fn duration(d: Duration) -> Option<Value> {
    chrono::Duration::from_std(d).ok().map(Value::Duration)
}

fn headers<'a>(h: Headers<'a>) -> Option<Boxed<'a>> {
    Some(Box::new(HeaderMap(h)))
}

impl<'a> Group<'a> {
    fn field(&self, name: &str) -> Option<Boxed<'a>> {
        let a = self.attrs;
        match self.kind {
            Kind::Request => {
                let r = &a.request;
                match name {
                    "path" => string(r.path),
                    "url_path" => string(r.path.map(|p| p.split('?').next().unwrap_or(p))),
                    "host" => string(r.host),
                    "scheme" => string(r.scheme),
                    "method" => string(r.method),
                    "headers" => headers(r.headers),
                    "referer" => cow(r.headers.get("referer")),
                    "useragent" => cow(r.headers.get("user-agent")),
                    "id" => match r.id {
                        Some(id) => string(Some(id)),
                        None => cow(r.headers.get("x-request-id")),
                    },
                    "protocol" => string(r.protocol),
                    "time" => from_value(r.time.and_then(timestamp)),
                    "duration" => from_value(r.duration.and_then(duration)),
                    "size" => size(r.size),
                    "total_size" => size(r.total_size),
                    _ => None,
                }
            }
            Kind::Response => {
                let r = &a.response;
                match name {
                    "code" => int(r.code.map(i64::from)),
                    "code_details" => string(r.code_details),
                    "flags" => uint(r.flags),
                    "grpc_status" => int(r.grpc_status.map(i64::from)),
                    "headers" => headers(r.headers),
                    "trailers" => headers(r.trailers),
                    "size" => size(r.size),
                    "total_size" => size(r.total_size),
                    _ => None,
                }
            }
            Kind::Connection => {
                let c = &a.connection;
                match name {
                    "mtls" => c.mtls.map(|b| Box::new(CelBool::from(b)) as Boxed<'a>),
                    "requested_server_name" => string(c.requested_server_name),
                    "id" => uint(c.id),
                    _ => None,
                }
            }
            Kind::Source | Kind::Destination | Kind::Upstream => {
                let p = match self.kind {
                    Kind::Source => &a.source,
                    Kind::Destination => &a.destination,
                    _ => &a.upstream,
                };
                match name {
                    "address" => string(p.address),
                    "port" => int(p.port.map(i64::from)),
                    _ => None,
                }
            }
            Kind::FilterState => string(
                a.filter_state
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v),
            ),
        }
    }
}

/// The key of a map lookup, which must be a string.
fn key(idx: &dyn Val) -> Result<&str, ExecutionError> {
    idx.downcast_ref::<CelString>()
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: idx.get_type().name().to_owned(),
            want: "string".to_owned(),
        })
}

/// Both lazy maps share the `Val` plumbing; only the lookup differs.
macro_rules! lazy_map {
    ($ty:ident, |$this:ident, $name:ident| $lookup:expr) => {
        impl<'a> Val for $ty<'a> {
            fn get_type(&self) -> &Type {
                &MAP_TYPE
            }

            fn cel_type() -> &'static Type {
                &MAP_TYPE
            }

            fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
            where
                Self: 'w,
            {
                Some(self)
            }

            fn as_container(&self) -> Option<&dyn Container> {
                Some(self)
            }

            fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
            where
                Self: 'w,
            {
                Box::new(*self)
            }
        }

        impl<'a> $ty<'a> {
            fn lookup(&self, $name: &str) -> Option<Boxed<'a>> {
                let $this = self;
                $lookup
            }
        }

        impl<'a> Indexer for $ty<'a> {
            fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
            where
                Self: 'w,
            {
                let name = key(idx)?;
                match self.lookup(name) {
                    Some(v) => Ok(CowVal::Owned(v)),
                    None => Err(ExecutionError::no_such_key(name)),
                }
            }

            fn steal<'w>(
                self: Box<Self>,
                idx: &dyn Val,
            ) -> Result<Box<dyn Val + 'w>, ExecutionError>
            where
                Self: 'w,
            {
                self.get(idx).map(CowVal::into_owned)
            }
        }

        impl Container for $ty<'_> {
            fn contains(&self, idx: &dyn Val) -> Result<bool, ExecutionError> {
                Ok(self.lookup(key(idx)?).is_some())
            }
        }
    };
}

lazy_map!(Group, |this, name| this.field(name));
lazy_map!(HeaderMap, |this, name| cow(this.0.get(name)));

#[cfg(test)]
#[path = "attributes_tests.rs"]
mod tests;
