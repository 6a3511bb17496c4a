//! The compiled route model: what the SDK's routing layer executes and what
//! `meshctl x route` explains. Built by [`super::compile`]; all types are
//! `Clone + Send + Sync` and cheap to share behind an `Arc`.

use serde::Serialize;

use crate::config::common::Duration;
use crate::config::networking::virtual_service::{CorsPolicy, HttpBody, RedirectPortSelection};
use crate::retry::RetryPolicy;

use super::matcher::{split_query, MatchBlock, RequestInfo, StrMatcher};

/// The routes for one destination `host:port`, in order.
// Aligned to a cache line for the same reason as `Model`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[repr(align(64))]
pub struct RouteTable {
    /// Fully qualified destination host.
    pub host: String,
    /// Destination (listener) port, when the table is for one port.
    pub port: Option<u16>,
    /// The VirtualService the routes come from (`ns/name`), `None` for the
    /// default route.
    pub virtual_service: Option<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Things dropped while compiling (unresolved delegates, conflicting
    /// delegate matches, bad regexes), for explanations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl RouteTable {
    /// The first route whose match blocks accept the request.
    #[inline]
    pub fn route(&self, req: &RequestInfo<'_>) -> Option<&Route> {
        let (path, query) = split_query(req.path);
        self.routes
            .iter()
            .find(|r| r.matches_split(req, path, query).is_some())
    }

    /// Like [`RouteTable::route`], also giving the index of the match block
    /// that matched (`None` for a rule without match blocks), which
    /// [`Rewrite::rewrite_path`] needs.
    pub fn route_with_match(&self, req: &RequestInfo<'_>) -> Option<(&Route, Option<usize>)> {
        let (path, query) = split_query(req.path);
        self.routes
            .iter()
            .find_map(|r| r.matches_split(req, path, query).map(|m| (r, m)))
    }
}

/// One compiled HTTP route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Source VirtualService (`ns/name`), `None` for the default route.
    pub virtual_service: Option<String>,
    /// Index of the http rule in the source VirtualService.
    pub rule_index: Option<usize>,
    /// When the rule came from a delegate: the delegate and its rule index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate: Option<DelegateOrigin>,
    /// Rule name.
    pub name: Option<String>,
    /// Match blocks, ORed; empty matches every request.
    pub matches: Vec<MatchBlock>,
    /// What to do with a matching request.
    pub action: Action,
    /// Path/authority rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Request header operations of the rule.
    pub request_headers: HeaderOps,
    /// Response header operations of the rule.
    pub response_headers: HeaderOps,
    /// Mirrors (fire-and-forget copies).
    pub mirrors: Vec<Mirror>,
    /// Retry policy (Istio's default when the rule has none).
    pub retries: RetryPolicy,
    /// Route timeout; `None` means no timeout (Istio's default).
    pub timeout: Option<Duration>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// CORS policy.
    pub cors: Option<CorsPolicy>,
}

impl Route {
    /// `Some(block index)` when the request matches (`Some(None)` for a rule
    /// without blocks), `None` when it does not.
    #[inline]
    pub fn matches(&self, req: &RequestInfo<'_>) -> Option<Option<usize>> {
        let (path, query) = split_query(req.path);
        self.matches_split(req, path, query)
    }

    #[inline]
    fn matches_split(
        &self,
        req: &RequestInfo<'_>,
        path: &str,
        query: &str,
    ) -> Option<Option<usize>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches
            .iter()
            .position(|m| m.matches_split(req, path, query))
            .map(Some)
    }

    /// The weighted destination chosen by `rand` (any u64, e.g. from a fast
    /// RNG), or `None` when the route does not forward or has no destination
    /// with positive weight.
    #[inline]
    pub fn pick(&self, rand: u64) -> Option<&Destination> {
        match &self.action {
            Action::Forward(w) => w.pick(rand),
            _ => None,
        }
    }

    /// The forwarding destinations (empty for redirect/direct response).
    pub fn destinations(&self) -> &[Destination] {
        match &self.action {
            Action::Forward(w) => &w.destinations,
            _ => &[],
        }
    }
}

/// Where a delegated rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegateOrigin {
    /// The delegate VirtualService (`ns/name`).
    pub virtual_service: String,
    /// Index of the http rule in the delegate.
    pub rule_index: usize,
}

/// What a route does with a matching request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward to weighted destinations.
    Forward(WeightedDestinations),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Destinations with positive weights (zero weights dropped at compile time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightedDestinations {
    /// The destinations, in config order.
    pub destinations: Vec<Destination>,
    /// Sum of the weights.
    pub total_weight: u64,
}

impl WeightedDestinations {
    /// Builds the set, dropping zero weights.
    pub fn new(destinations: Vec<Destination>) -> Self {
        let destinations: Vec<Destination> =
            destinations.into_iter().filter(|d| d.weight > 0).collect();
        let total_weight = destinations.iter().map(|d| u64::from(d.weight)).sum();
        Self {
            destinations,
            total_weight,
        }
    }

    /// Chooses a destination with probability proportional to its weight:
    /// `rand % total` falls into one destination's cumulative range. Pure;
    /// pass a uniformly random `u64`.
    #[inline]
    pub fn pick(&self, rand: u64) -> Option<&Destination> {
        if self.destinations.len() == 1 {
            return self.destinations.first();
        }
        if self.total_weight == 0 {
            return None;
        }
        let mut x = rand % self.total_weight;
        for d in &self.destinations {
            let w = u64::from(d.weight);
            if x < w {
                return Some(d);
            }
            x -= w;
        }
        self.destinations.last()
    }
}

/// One weighted destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Destination {
    /// Fully qualified host.
    pub host: String,
    /// Subset, when one is named.
    pub subset: Option<String>,
    /// Port: the destination's own, else the port the request was for.
    pub port: Option<u16>,
    /// Relative weight (a lone destination has 100).
    pub weight: u32,
    /// Request header operations for this destination only.
    pub request_headers: HeaderOps,
    /// Response header operations for this destination only.
    pub response_headers: HeaderOps,
}

/// A redirect answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// New authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// New port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How to derive the port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// New scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status code (301 by default).
    pub code: u16,
}

/// A fixed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A path/authority rewrite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rewrite {
    /// Replacement for the matched prefix (or the whole exact path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// New authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Regex substitution on the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
}

/// A regex substitution on the path (Envoy `regex_rewrite`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegexRewrite {
    /// Pattern, matched anywhere in the path (every match replaced).
    pub pattern: FullRegexSource,
    /// Replacement as written (`\1` group references).
    pub substitution: String,
    #[serde(skip)]
    pub(crate) replacement: String,
}

/// An unanchored regex that serializes as its pattern.
#[derive(Debug, Clone)]
pub struct FullRegexSource(pub regex::Regex);

impl PartialEq for FullRegexSource {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Serialize for FullRegexSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl RegexRewrite {
    /// Compiles a rewrite; `\N` group references become the regex crate's `${N}`.
    pub fn new(pattern: &str, substitution: &str) -> Result<Self, regex::Error> {
        let mut replacement = String::with_capacity(substitution.len() + 4);
        let mut chars = substitution.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                    replacement.push_str("${");
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        replacement.push(d);
                        chars.next();
                    }
                    replacement.push('}');
                }
                '$' => replacement.push_str("$$"),
                c => replacement.push(c),
            }
        }
        Ok(Self {
            pattern: FullRegexSource(regex::Regex::new(pattern)?),
            substitution: substitution.to_string(),
            replacement,
        })
    }
}

impl Rewrite {
    /// The rewritten path for a request that matched `block` (from
    /// [`RouteTable::route_with_match`]) of `route`, or `None` when the path
    /// is unchanged. `uri` replaces the matched prefix (the whole path for
    /// an exact or regex match; the leading `/` when the block has no uri
    /// condition, as Istio configures Envoy's `prefix_rewrite`); the query
    /// string is kept.
    pub fn rewrite_path(&self, route: &Route, block: Option<usize>, path: &str) -> Option<String> {
        let (p, q) = split_query(path);
        let new_path = if let Some(rr) = &self.uri_regex {
            rr.pattern
                .0
                .replace_all(p, rr.replacement.as_str())
                .into_owned()
        } else if let Some(u) = &self.uri {
            let uri_match = block
                .and_then(|i| route.matches.get(i))
                .and_then(|m| m.uri.as_ref());
            match uri_match.map(|m| &m.matcher) {
                Some(StrMatcher::Prefix(prefix)) => {
                    format!("{u}{}", p.get(prefix.len()..).unwrap_or(""))
                }
                Some(
                    StrMatcher::Exact(_)
                    | StrMatcher::Regex(_)
                    | StrMatcher::Suffix(_)
                    | StrMatcher::Contains(_),
                ) => u.clone(),
                Some(StrMatcher::Present) | None => {
                    format!("{u}{}", p.strip_prefix('/').unwrap_or(p))
                }
            }
        } else {
            return None;
        };
        Some(if q.is_empty() {
            new_path
        } else {
            format!("{new_path}?{q}")
        })
    }
}

/// Header operations, names lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeaderOps {
    /// Overwrite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A mirror destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mirror {
    /// Fully qualified host.
    pub host: String,
    /// Subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Share of requests mirrored, 0-100.
    pub percentage: f64,
}

/// Fault injection of a route. A missing percentage means 0%.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Delay fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    /// Abort fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

/// A delay fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelayFault {
    /// How long.
    pub delay: Duration,
    /// Share of requests, 0-100.
    pub percentage: f64,
}

/// An abort fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbortFault {
    /// HTTP status (when aborting with HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// gRPC status code (when aborting with gRPC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Share of requests, 0-100.
    pub percentage: f64,
}
