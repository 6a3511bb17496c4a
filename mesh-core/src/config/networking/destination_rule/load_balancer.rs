//! `LoadBalancerSettings` of a DestinationRule: the simple algorithms,
//! consistent hashing, locality weighting/failover and slow-start warmup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::common::Duration;
use crate::config::validate::{field, Issues, Validate};

/// Istio's `LoadBalancerSettings`. `simple` and `consistentHash` are a
/// oneof: at most one may be set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A standard algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Hash-based affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality weighting or failover; replaces the mesh-wide setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated slow-start window; use `warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Istio's `LoadBalancerSettings.SimpleLB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio picks (LEAST_REQUEST).
    #[default]
    Unspecified,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// A random healthy endpoint.
    Random,
    /// Forward to the address the caller asked for, no balancing.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Fewest outstanding requests (power of two choices).
    LeastRequest,
}

/// Istio's `LoadBalancerSettings.ConsistentHashLB`. The hash key
/// (`httpHeaderName`, `httpCookie`, `useSourceIp`, `httpQueryParameterName`)
/// is a oneof, and so is the algorithm (`ringHash`, `maglev`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash a request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash a cookie, generating it when `ttl` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash the source IP address (HTTP and TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash (the default algorithm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev hashing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Istio's `ConsistentHashLB.RingHash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum virtual nodes on the ring (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Istio's `ConsistentHashLB.MagLev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size: a prime below 5000011 (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Istio's `ConsistentHashLB.HTTPCookie`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name. Required.
    #[serde(default)]
    pub name: String,
    /// Path set on a generated cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie; `0s` makes a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes of a generated cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<HttpCookieAttribute>,
}

/// Istio's `HTTPCookie.Attribute`: one `name=value` cookie attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookieAttribute {
    /// Attribute name, e.g. `SameSite`. Required.
    #[serde(default)]
    pub name: String,
    /// Attribute value, e.g. `Strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Istio's `LocalityLoadBalancerSetting`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    /// Traffic shares per destination locality, by source locality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<Distribute>,
    /// Region to fail over to, by source region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
    /// Labels (or `label=value`) ordering endpoints into priorities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Turns locality load balancing on or off for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Istio's `LocalityLoadBalancerSetting.Distribute`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribute {
    /// Source locality `region/zone/subzone`; a trailing `*` is a wildcard.
    #[serde(default)]
    pub from: String,
    /// Destination locality to weight (1-100, totalling 100).
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

/// Istio's `LocalityLoadBalancerSetting.Failover`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Source region.
    #[serde(default)]
    pub from: String,
    /// Region to fail over to.
    #[serde(default)]
    pub to: String,
}

/// Istio's `WarmupConfiguration`: slow start for new endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// How long a new endpoint warms up. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Share of full traffic a new endpoint starts with (0-100, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// How fast traffic ramps up (>= 1, default 1 = linear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

impl Validate for LoadBalancerSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            issues.push(
                path,
                "only one of simple or consistentHash may be set; pick one load-balancing policy",
            );
        }
        self.consistent_hash
            .validate(&field(path, "consistentHash"), issues);
        self.locality_lb_setting
            .validate(&field(path, "localityLbSetting"), issues);
        self.warmup.validate(&field(path, "warmup"), issues);
    }
}

impl Validate for ConsistentHashLb {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        match keys {
            0 => issues.push(
                path,
                "consistentHash has no hash key, so requests spread as if unhashed; set one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            ),
            1 => {}
            _ => issues.push(
                path,
                "only one hash key may be set; pick one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            ),
        }
        if self.http_header_name.as_deref() == Some("") {
            issues.push(
                field(path, "httpHeaderName"),
                "httpHeaderName is empty; name the header to hash, e.g. x-user-id",
            );
        }
        if self.http_query_parameter_name.as_deref() == Some("") {
            issues.push(
                field(path, "httpQueryParameterName"),
                "httpQueryParameterName is empty; name the query parameter to hash",
            );
        }
        if let Some(c) = &self.http_cookie {
            let cp = field(path, "httpCookie");
            if c.name.is_empty() {
                issues.push(
                    field(&cp, "name"),
                    "httpCookie.name is required; name the cookie to hash, e.g. session-id",
                );
            }
            for (i, a) in c.attributes.iter().enumerate() {
                if a.name.is_empty() {
                    issues.push(
                        format!("{cp}.attributes[{i}].name"),
                        "cookie attribute name is required, e.g. SameSite",
                    );
                }
            }
        }
        if self.ring_hash.is_some() && self.maglev.is_some() {
            issues.push(
                path,
                "only one of ringHash or maglev may be set; pick one hash algorithm",
            );
        }
        if self.minimum_ring_size.is_some() && (self.ring_hash.is_some() || self.maglev.is_some()) {
            issues.push(
                field(path, "minimumRingSize"),
                "the deprecated minimumRingSize cannot be combined with ringHash or maglev; move it to ringHash.minimumRingSize",
            );
        }
        if let Some(m) = &self.maglev {
            let p = field(&field(path, "maglev"), "tableSize");
            match m.table_size {
                None | Some(0) => issues.push(
                    p,
                    "maglev.tableSize is required; use a prime below 5000011, e.g. 65537",
                ),
                Some(n) if n >= 5_000_011 => issues.push(
                    p,
                    format!("maglev.tableSize {n} is too large; use a prime below 5000011, e.g. 65537"),
                ),
                Some(n) if !is_prime(n) => issues.push(
                    p,
                    format!("maglev.tableSize {n} is not a prime number; use a prime such as 65537 or 131071"),
                ),
                Some(_) => {}
            }
        }
    }
}

/// Primality as Envoy checks Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x < 2 {
        return false;
    }
    if x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut f = 3u64;
    while f * f <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

/// Topology labels that `failover` already covers, so they cannot also be
/// in `failoverPriority` when `failover` is set.
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Failover without outlier detection is only a warning in Istio (nothing
/// ejects endpoints, so nothing fails over); the analyzer reports it as
/// `dr-failover-without-outlier`, so it is not an error here. The same rules
/// apply to MeshConfig's `localityLbSetting`.
impl Validate for LocalityLoadBalancerSetting {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            issues.push(
                path,
                "distribute and failover cannot both be set; use distribute to weight localities or failover to pick fallback regions",
            );
            return;
        }
        if !self.failover.is_empty() {
            if let Some(l) = self
                .failover_priority
                .iter()
                .find(|l| TOPOLOGY_LABELS.contains(&l.as_str()))
            {
                issues.push(
                    field(path, "failoverPriority"),
                    format!("{l:?} cannot be in failoverPriority when failover is set; failover already orders by region/zone/subzone, so drop one of them"),
                );
                return;
            }
        }
        let dist_path = field(path, "distribute");
        let mut sources = Vec::new();
        for (i, d) in self.distribute.iter().enumerate() {
            let p = format!("{dist_path}[{i}]");
            sources.push(d.from.as_str());
            if let Some((loc, w)) = d.to.iter().find(|(_, w)| **w == 0 || **w > 100) {
                issues.push(
                    format!("{p}.to.{loc}"),
                    format!("locality weight {w} is out of range; each weight must be 1-100"),
                );
                return;
            }
            let total: u32 = d.to.values().sum();
            if total != 100 {
                issues.push(
                    field(&p, "to"),
                    format!(
                        "locality weights from {:?} total {total}; they must add up to 100",
                        d.from
                    ),
                );
                return;
            }
            let dests: Vec<&str> = d.to.keys().map(String::as_str).collect();
            if let Some(why) = localities_error(&dests) {
                issues.push(field(&p, "to"), why);
            }
        }
        if let Some(why) = localities_error(&sources) {
            issues.push(dist_path, why);
        }
        for (i, f) in self.failover.iter().enumerate() {
            let p = format!("{}[{i}]", field(path, "failover"));
            if f.from == f.to {
                issues.push(
                    &p,
                    format!("failover from {:?} to itself does nothing; name a different region in `to`", f.from),
                );
            }
            if f.from.contains('/') || f.to.contains('/') {
                issues.push(
                    &p,
                    "failover takes regions only (no zone or subzone); write e.g. from: us-east, to: us-west",
                );
            }
            if f.from.contains('*') || f.to.contains('*') {
                issues.push(
                    &p,
                    "failover regions cannot contain the '*' wildcard; name the regions",
                );
            }
        }
    }
}

/// Istio's locality list rules: one trailing `*` at most, no empty
/// segments, and no entry covered by an earlier one.
fn localities_error(localities: &[&str]) -> Option<String> {
    // Localities seen so far, as (region, zone, subzone) with "*" for "all".
    let mut seen: Vec<[&str; 3]> = Vec::new();
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Some(format!(
                "locality {loc:?} may contain one '*' only, as its last character (e.g. us-west/*)"
            ));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Some(format!(
                "locality {loc:?} has an empty region, zone or subzone; write region/zone/subzone"
            ));
        }
        let key = [
            parts[0],
            parts.get(1).copied().unwrap_or("*"),
            parts.get(2).copied().unwrap_or("*"),
        ];
        // Covered by an earlier, equal or more general entry (as Istio
        // checks it: a specific entry before a general one is allowed).
        let overlaps = seen
            .iter()
            .any(|s| (0..3).all(|i| s[i] == "*" || s[i] == key[i]));
        if overlaps {
            return Some(format!(
                "locality {loc:?} overlaps an earlier entry; list each locality once"
            ));
        }
        seen.push(key);
    }
    None
}

impl Validate for WarmupConfiguration {
    fn validate(&self, path: &str, issues: &mut Issues) {
        match self.duration {
            None => issues.push(
                field(path, "duration"),
                "warmup.duration is required; e.g. duration: 60s",
            ),
            Some(d) => d.check_ms(&field(path, "duration"), issues),
        }
        if let Some(p) = self.minimum_percent {
            if !(0.0..=100.0).contains(&p) {
                issues.push(
                    field(path, "minimumPercent"),
                    format!("minimumPercent {p} is out of range; expected 0 to 100"),
                );
            }
        }
        if let Some(a) = self.aggression {
            if a.is_nan() || a < 1.0 {
                issues.push(
                    field(path, "aggression"),
                    format!("aggression {a} is below 1; use 1 for a linear ramp or more for a faster one"),
                );
            }
        }
    }
}
