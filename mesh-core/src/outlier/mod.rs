//! Envoy's outlier detector as a pure state machine: passive health
//! checking of the endpoints of one cluster from the outcomes of the
//! requests sent to them.
//!
//! What it does: counts consecutive 5xx, gateway (502/503/504) and
//! local-origin failures (connect failures, timeouts, resets) per endpoint,
//! ejects an endpoint inline when a count reaches its threshold (subject to
//! `maxEjectionPercent`, always allowing one ejection as Envoy does), keeps
//! it ejected for `baseEjectionTime x number of ejections` (capped by
//! Envoy's `max_ejection_time`, 300 s), and on every `interval` sweep
//! returns endpoints whose time is up and lets the ejection multiplier of
//! healthy endpoints decay. State is keyed by endpoint (usually its socket
//! address), so endpoints that survive an update keep their history.
//!
//! What it is not: Envoy's success-rate and failure-percentage detectors
//! (Istio does not expose them), and no clock or timer: time comes in as
//! [`Instant`] arguments and the caller drives [`OutlierDetector::tick`] (or
//! lets [`OutlierDetector::on_result`] sweep lazily).
//!
//! `minHealthPercent` is not an ejection rule in Envoy: Istio turns it into
//! the cluster's healthy panic threshold, which the load balancer applies
//! ([`OutlierConfig::panic_threshold_percent`]).

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::config::networking::destination_rule::OutlierDetection;

/// Envoy's default `consecutive_5xx`.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Envoy's default ejection sweep interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Envoy's default base ejection time.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Envoy's default cap on one ejection.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Envoy's default `max_ejection_percent`.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// The detector's settings, with Envoy's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive 5xx (and, unsplit, local-origin failures) before
    /// ejection; 0 disables the rule.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and, unsplit, local-origin failures)
    /// before ejection; 0 disables the rule.
    pub consecutive_gateway: u32,
    /// Count local-origin failures on their own counter.
    pub split_local_origin: bool,
    /// Consecutive local-origin failures before ejection, when split; 0
    /// disables the rule.
    pub consecutive_local_origin: u32,
    /// Time between sweeps.
    pub interval: Duration,
    /// Ejection time per ejection so far.
    pub base_ejection_time: Duration,
    /// Longest single ejection.
    pub max_ejection_time: Duration,
    /// Share of endpoints that may be ejected at once (one is always
    /// allowed).
    pub max_ejection_percent: u32,
    /// Istio's `minHealthPercent`: below this share of healthy endpoints
    /// the load balancer panics and uses every endpoint.
    pub min_health_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_gateway: 0,
            split_local_origin: false,
            consecutive_local_origin: DEFAULT_CONSECUTIVE_5XX,
            interval: DEFAULT_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            min_health_percent: 0,
        }
    }
}

impl OutlierConfig {
    /// Istio's `OutlierDetection` as Istio translates it for Envoy: the
    /// deprecated `consecutiveErrors` means gateway errors (used when
    /// `consecutiveGatewayErrors` is unset), an unset `consecutive5xxErrors`
    /// keeps Envoy's 5, and 0 disables a rule.
    pub fn from_istio(od: &OutlierDetection) -> Self {
        let d = Self::default();
        Self {
            consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(d.consecutive_5xx),
            consecutive_gateway: od
                .consecutive_gateway_errors
                .or(od.consecutive_errors)
                .unwrap_or(0),
            split_local_origin: od.split_external_local_origin_errors.unwrap_or(false),
            consecutive_local_origin: od
                .consecutive_local_origin_failures
                .unwrap_or(d.consecutive_local_origin),
            interval: od.interval.map(|x| x.get()).unwrap_or(d.interval),
            base_ejection_time: od
                .base_ejection_time
                .map(|x| x.get())
                .unwrap_or(d.base_ejection_time),
            max_ejection_time: d.max_ejection_time.max(
                od.base_ejection_time
                    .map(|x| x.get())
                    .unwrap_or(Duration::ZERO),
            ),
            max_ejection_percent: od
                .max_ejection_percent
                .unwrap_or(d.max_ejection_percent)
                .min(100),
            min_health_percent: od.min_health_percent.unwrap_or(0).min(100),
        }
    }

    /// The healthy panic threshold the load balancer applies when this
    /// detector runs (Istio sets Envoy's `healthy_panic_threshold` to
    /// `minHealthPercent`, 0 by default: no panic).
    pub fn panic_threshold_percent(&self) -> u32 {
        self.min_health_percent
    }
}

/// What one request to an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this HTTP status (gRPC statuses are the
    /// caller's to map; Envoy maps them to HTTP codes).
    Status(u16),
    /// Connecting failed (refused, unreachable, connect timeout).
    ConnectFailed,
    /// The request timed out after the connection was made.
    Timeout,
    /// The upstream reset the connection or stream.
    Reset,
    /// A connection was established (a local-origin success).
    Connected,
}

impl Outcome {
    fn is_local_origin(self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailed | Outcome::Timeout | Outcome::Reset | Outcome::Connected
        )
    }
}

/// The HTTP status Envoy maps a gRPC status to (its
/// `grpcToHttpStatus`), so gRPC failures count for outlier detection the
/// way their HTTP counterparts do: UNAVAILABLE is 503, INTERNAL 500,
/// DEADLINE_EXCEEDED 504 and so on.
pub fn grpc_to_http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    /// `consecutive5xxErrors`.
    Consecutive5xx,
    /// `consecutiveGatewayErrors`.
    ConsecutiveGateway,
    /// `consecutiveLocalOriginFailures`.
    ConsecutiveLocalOrigin,
}

/// An ejection that just happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Which rule fired.
    pub reason: EjectReason,
    /// How long the endpoint stays out.
    pub duration: Duration,
    /// How many times it has been ejected (the multiplier).
    pub count: u32,
}

#[derive(Debug, Clone, Default)]
struct HostState {
    c5xx: u32,
    gateway: u32,
    local: u32,
    /// Ejection multiplier (Envoy's `num_ejections`), decays while healthy.
    multiplier: u32,
    ejected_until: Option<Instant>,
}

/// Counters for observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutlierStats {
    /// Ejections so far.
    pub ejections_total: u64,
    /// Ejections refused by `maxEjectionPercent`.
    pub ejections_overflow: u64,
}

/// The outlier detector of one cluster, keyed by endpoint `K`.
#[derive(Debug, Clone)]
pub struct OutlierDetector<K: Eq + Hash + Clone> {
    cfg: OutlierConfig,
    // Looked up on every request's result: a fast hash (keys are
    // endpoint addresses from config, not from requests).
    hosts: HashMap<K, HostState, foldhash::fast::RandomState>,
    // When the next interval sweep is due (`None` before the first
    // result). Kept as a deadline so the check per request is one compare.
    next_sweep: Option<Instant>,
    stats: OutlierStats,
    // The latest end of any ejection: past it nothing is ejected, which
    // lets the balancer skip asking about each endpoint.
    ejections_end: Option<Instant>,
}

impl<K: Eq + Hash + Clone> OutlierDetector<K> {
    /// A detector with no endpoints yet.
    pub fn new(cfg: OutlierConfig) -> Self {
        Self {
            cfg,
            hosts: HashMap::default(),
            next_sweep: None,
            stats: OutlierStats::default(),
            ejections_end: None,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &OutlierConfig {
        &self.cfg
    }

    /// Replaces the settings, keeping every endpoint's state.
    pub fn set_config(&mut self, cfg: OutlierConfig) {
        if let Some(due) = self.next_sweep {
            // The sweep stays one (new) interval after the last one.
            self.next_sweep = due
                .checked_sub(self.cfg.interval)
                .and_then(|last| last.checked_add(cfg.interval));
        }
        self.cfg = cfg;
    }

    /// Counters so far.
    pub fn stats(&self) -> OutlierStats {
        self.stats
    }

    /// The endpoints are now `keys`: new ones start clean, surviving ones
    /// keep their counters and ejections, removed ones are forgotten.
    pub fn update_endpoints(&mut self, keys: &[K]) {
        let mut next =
            HashMap::with_capacity_and_hasher(keys.len(), foldhash::fast::RandomState::default());
        for k in keys {
            let st = self.hosts.remove(k).unwrap_or_default();
            next.insert(k.clone(), st);
        }
        self.hosts = next;
        self.ejections_end = self.hosts.values().filter_map(|h| h.ejected_until).max();
    }

    /// True when no endpoint is ejected at `now` (without looking at each).
    pub fn none_ejected(&self, now: Instant) -> bool {
        self.ejections_end.is_none_or(|end| now >= end)
    }

    /// True while `key` is ejected at `now`. An endpoint whose ejection
    /// time is up counts as back even before the next sweep.
    pub fn is_ejected(&self, key: &K, now: Instant) -> bool {
        if self.none_ejected(now) {
            return false;
        }
        self.hosts
            .get(key)
            .and_then(|h| h.ejected_until)
            .is_some_and(|until| now < until)
    }

    /// Endpoints ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        if self.none_ejected(now) {
            return 0;
        }
        self.hosts
            .values()
            .filter(|h| h.ejected_until.is_some_and(|u| now < u))
            .count()
    }

    /// Records the outcome of a request to `key` and ejects it when a rule
    /// fires. Runs a sweep first when an interval has passed.
    pub fn on_result(&mut self, key: &K, outcome: Outcome, now: Instant) -> Option<Ejection> {
        self.maybe_tick(now);
        let cfg = &self.cfg;
        let h = self.hosts.get_mut(key)?;
        if h.ejected_until.is_some_and(|u| now < u) {
            // Results of requests that started before the ejection do not
            // count twice.
            return None;
        }
        let mut fired = None;
        let local = outcome.is_local_origin();
        if local && cfg.split_local_origin {
            if outcome == Outcome::Connected {
                h.local = 0;
            } else {
                h.local += 1;
                if cfg.consecutive_local_origin > 0 && h.local >= cfg.consecutive_local_origin {
                    fired = Some(EjectReason::ConsecutiveLocalOrigin);
                }
            }
        } else {
            // Unsplit, local-origin failures count as a 503 (Envoy maps a
            // connect failure to 503 for both counters).
            let status = match outcome {
                Outcome::Status(s) => Some(s),
                Outcome::Connected => None,
                _ => Some(503),
            };
            match status {
                None => {}
                Some(s) if s >= 500 => {
                    h.c5xx += 1;
                    if matches!(s, 502..=504) {
                        h.gateway += 1;
                    } else {
                        h.gateway = 0;
                    }
                    if cfg.consecutive_gateway > 0 && h.gateway >= cfg.consecutive_gateway {
                        fired = Some(EjectReason::ConsecutiveGateway);
                    } else if cfg.consecutive_5xx > 0 && h.c5xx >= cfg.consecutive_5xx {
                        fired = Some(EjectReason::Consecutive5xx);
                    }
                }
                Some(_) => {
                    h.c5xx = 0;
                    h.gateway = 0;
                    if cfg.split_local_origin {
                        // A response is also a local-origin success.
                        h.local = 0;
                    }
                }
            }
        }
        let reason = fired?;
        self.try_eject(key, reason, now)
    }

    fn try_eject(&mut self, key: &K, reason: EjectReason, now: Instant) -> Option<Ejection> {
        let total = self.hosts.len();
        let ejected = self.ejected_count(now);
        let allowed =
            ejected == 0 || (ejected + 1) * 100 <= self.cfg.max_ejection_percent as usize * total;
        let cfg = self.cfg.clone();
        let h = self.hosts.get_mut(key)?;
        // Counters restart whether or not the ejection happens, as in Envoy.
        h.c5xx = 0;
        h.gateway = 0;
        h.local = 0;
        if !allowed {
            self.stats.ejections_overflow += 1;
            return None;
        }
        h.multiplier += 1;
        let duration = cfg
            .base_ejection_time
            .saturating_mul(h.multiplier)
            .min(cfg.max_ejection_time.max(cfg.base_ejection_time));
        let until = now + duration;
        h.ejected_until = Some(until);
        self.ejections_end = self.ejections_end.max(Some(until));
        self.stats.ejections_total += 1;
        Some(Ejection {
            reason,
            duration,
            count: h.multiplier,
        })
    }

    /// Sweeps when at least one interval has passed since the last sweep.
    pub fn maybe_tick(&mut self, now: Instant) -> Vec<K> {
        match self.next_sweep {
            None => {
                self.next_sweep = now.checked_add(self.cfg.interval);
                Vec::new()
            }
            Some(due) if now >= due => self.tick(now),
            Some(_) => Vec::new(),
        }
    }

    /// The interval sweep: returns endpoints whose ejection time is up
    /// (and reports them) and lets the ejection multiplier of endpoints
    /// that stayed healthy decay by one, as Envoy does.
    pub fn tick(&mut self, now: Instant) -> Vec<K> {
        self.next_sweep = now.checked_add(self.cfg.interval);
        let mut returned = Vec::new();
        for (k, h) in self.hosts.iter_mut() {
            match h.ejected_until {
                Some(u) if now >= u => {
                    h.ejected_until = None;
                    returned.push(k.clone());
                }
                Some(_) => {}
                None => h.multiplier = h.multiplier.saturating_sub(1),
            }
        }
        returned
    }

    /// How many times `key` has been ejected (the current multiplier).
    pub fn ejection_multiplier(&self, key: &K) -> u32 {
        self.hosts.get(key).map_or(0, |h| h.multiplier)
    }
}
