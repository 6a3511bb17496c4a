//! `retryOn` conditions: Envoy's `x-envoy-retry-on` and
//! `x-envoy-retry-grpc-on` values as a typed flag set, plus gRPC status names.

use std::fmt;

use serde::{Serialize, Serializer};

/// A set of retry conditions (the non-numeric part of `retryOn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RetryOn(u32);

macro_rules! conditions {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl RetryOn {
            $( $(#[$doc])* pub const $name: RetryOn = RetryOn(1 << $bit); )*
            /// Every condition with its `retryOn` spelling, in Envoy's order.
            pub const ALL: &'static [(RetryOn, &'static str)] = &[$((RetryOn::$name, $text)),*];
        }
    };
}

conditions! {
    /// `5xx`: any 5xx response, or no response at all (reset, connect
    /// failure, refused stream, per-try timeout).
    FIVE_XX = 0, "5xx";
    /// `gateway-error`: 502, 503 or 504, or no response at all.
    GATEWAY_ERROR = 1, "gateway-error";
    /// `reset`: no response at all (disconnect, reset, per-try timeout).
    RESET = 2, "reset";
    /// `reset-before-request`: a reset before the request was fully sent.
    RESET_BEFORE_REQUEST = 3, "reset-before-request";
    /// `connect-failure`: the connection could not be established.
    CONNECT_FAILURE = 4, "connect-failure";
    /// `envoy-ratelimited`: the response carries `x-envoy-ratelimited`.
    ENVOY_RATELIMITED = 5, "envoy-ratelimited";
    /// `retriable-4xx`: a 409 response (Envoy's only retriable 4xx).
    RETRIABLE_4XX = 6, "retriable-4xx";
    /// `refused-stream`: the upstream refused the HTTP/2 stream (REFUSED_STREAM).
    REFUSED_STREAM = 7, "refused-stream";
    /// `retriable-status-codes`: a status in the policy's code list.
    RETRIABLE_STATUS_CODES = 8, "retriable-status-codes";
    /// `retriable-headers`: response headers matching the policy's retriable
    /// headers. Istio has no field to configure them, so this never matches.
    RETRIABLE_HEADERS = 9, "retriable-headers";
    /// `http3-post-connect-failure`: HTTP/3 only; never matches here.
    HTTP3_POST_CONNECT_FAILURE = 10, "http3-post-connect-failure";
    /// gRPC `cancelled` (status 1).
    CANCELLED = 11, "cancelled";
    /// gRPC `deadline-exceeded` (status 4).
    DEADLINE_EXCEEDED = 12, "deadline-exceeded";
    /// gRPC `internal` (status 13).
    INTERNAL = 13, "internal";
    /// gRPC `resource-exhausted` (status 8).
    RESOURCE_EXHAUSTED = 14, "resource-exhausted";
    /// gRPC `unavailable` (status 14).
    UNAVAILABLE = 15, "unavailable";
}

impl RetryOn {
    /// No condition.
    pub const NONE: RetryOn = RetryOn(0);

    /// True when every condition of `other` is in `self`.
    pub const fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Union of two sets.
    pub const fn union(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// The raw bit set.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses one condition name.
    pub fn from_name(name: &str) -> Option<RetryOn> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }

    /// The names of the conditions in the set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .iter()
            .filter(move |(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: RetryOn) -> RetryOn {
        self.union(rhs)
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for n in self.names() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(n)?;
            first = false;
        }
        Ok(())
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

/// Parses a `retryOn` string (`5xx,connect-failure,503`) into conditions and
/// retriable status codes, as istiod does: numbers are status codes, and
/// giving a code implies `retriable-status-codes`. Items are separated by
/// commas; spaces are not allowed (Istio rejects them). Numeric codes must be
/// 100-599 (Istio accepts the codes Go's `net/http` knows by name, which is a
/// subset of that range). On error, returns every invalid item.
pub fn parse_retry_on(s: &str) -> Result<(RetryOn, Vec<u16>), Vec<String>> {
    let mut on = RetryOn::NONE;
    let mut codes = Vec::new();
    let mut bad = Vec::new();
    for item in s.split(',') {
        if let Some(c) = RetryOn::from_name(item) {
            on = on | c;
        } else if let Some(code) = item
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c) && !item.starts_with('+'))
        {
            if !codes.contains(&code) {
                codes.push(code);
            }
            on = on | RetryOn::RETRIABLE_STATUS_CODES;
        } else {
            bad.push(item.to_string());
        }
    }
    if bad.is_empty() {
        Ok((on, codes))
    } else {
        Err(bad)
    }
}

/// gRPC status names as Istio accepts them in `fault.abort.grpcStatus`, with
/// their numeric codes.
pub const GRPC_STATUS: [(&str, u32); 17] = [
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// The numeric code of a gRPC status name (`UNAVAILABLE` -> 14).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
}

/// Reads `grpc-status` from response headers (a trailers-only response) or,
/// failing that, from trailers. Header names compare case-insensitively.
pub fn grpc_status<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    trailers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<u32> {
    fn find<'b>(it: impl IntoIterator<Item = (&'b str, &'b str)>) -> Option<u32> {
        it.into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("grpc-status"))
            .and_then(|(_, v)| v.trim().parse::<u32>().ok())
    }
    find(headers).or_else(|| find(trailers))
}
