//! The balancer's settings and how Istio's `LoadBalancerSettings` and
//! `OutlierDetection` map onto them.

use std::time::Duration;

use super::{maglev, ring, Algorithm, DEFAULT_PANIC_THRESHOLD, DEFAULT_WARMUP_MIN_PERCENT};
use crate::config::networking::destination_rule::{
    Distribute, Failover, LoadBalancerSettings, OutlierDetection, SimpleLb,
};

/// Slow start settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    /// Ramp duration.
    pub duration: Duration,
    /// Weight share (percent) a new endpoint starts at.
    pub min_percent: f64,
    /// Ramp shape: 1 linear, larger ramps faster at first... per Envoy,
    /// the factor is `(age/duration)^(1/aggression)`.
    pub aggression: f64,
}

impl Warmup {
    /// The weight factor of an endpoint `age` old.
    pub fn factor(&self, age: Duration) -> f64 {
        if self.duration.is_zero() || age >= self.duration {
            return 1.0;
        }
        let t = age.as_secs_f64() / self.duration.as_secs_f64();
        let f = t.powf(1.0 / self.aggression.max(1e-3));
        f.max(self.min_percent / 100.0).min(1.0)
    }
}

/// Everything the balancer needs from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Order endpoints into priorities (Istio does when outlier detection
    /// is configured and locality load balancing is enabled).
    pub priorities: bool,
    /// Region failover order.
    pub failover: Vec<Failover>,
    /// Labels ordering endpoints into priorities.
    pub failover_priority: Vec<String>,
    /// Locality traffic shares.
    pub distribute: Vec<Distribute>,
    /// Healthy panic threshold, percent (0 disables panic mode).
    pub panic_threshold: u32,
    /// Slow start.
    pub warmup: Option<Warmup>,
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::LeastRequest,
            priorities: false,
            failover: Vec::new(),
            failover_priority: Vec::new(),
            distribute: Vec::new(),
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            warmup: None,
        }
    }
}

impl LbConfig {
    /// The configuration Istio derives from a cluster's load balancer and
    /// outlier detection settings.
    pub fn from_istio(lb: Option<&LoadBalancerSettings>, od: Option<&OutlierDetection>) -> Self {
        let mut c = Self::default();
        if let Some(od) = od {
            c.panic_threshold = od.min_health_percent.unwrap_or(0).min(100);
        }
        let Some(lb) = lb else {
            c.priorities = od.is_some();
            return c;
        };
        c.algorithm = match (&lb.consistent_hash, lb.simple.unwrap_or_default()) {
            (Some(ch), _) => match (ch.maglev, ch.ring_hash) {
                (Some(m), _) => Algorithm::Maglev {
                    table_size: m.table_size.unwrap_or(maglev::DEFAULT_TABLE_SIZE),
                },
                (None, r) => Algorithm::RingHash {
                    min_ring_size: r
                        .and_then(|r| r.minimum_ring_size)
                        .or(ch.minimum_ring_size)
                        .unwrap_or(ring::DEFAULT_MIN_RING_SIZE),
                },
            },
            (None, SimpleLb::RoundRobin) => Algorithm::RoundRobin,
            (None, SimpleLb::Random) => Algorithm::Random,
            (None, _) => Algorithm::LeastRequest,
        };
        let loc = lb.locality_lb_setting.as_ref();
        let enabled = loc.and_then(|l| l.enabled).unwrap_or(true);
        if enabled {
            if let Some(l) = loc {
                c.failover = l.failover.clone();
                c.failover_priority = l.failover_priority.clone();
                c.distribute = l.distribute.clone();
            }
            c.priorities = od.is_some() && c.distribute.is_empty();
        }
        let warm = lb
            .warmup
            .as_ref()
            .and_then(|w| {
                w.duration.map(|d| Warmup {
                    duration: d.get(),
                    min_percent: w.minimum_percent.unwrap_or(DEFAULT_WARMUP_MIN_PERCENT),
                    aggression: w.aggression.unwrap_or(1.0),
                })
            })
            .or_else(|| {
                lb.warmup_duration_secs.map(|d| Warmup {
                    duration: d.get(),
                    min_percent: DEFAULT_WARMUP_MIN_PERCENT,
                    aggression: 1.0,
                })
            });
        c.warmup = warm.filter(|w| !w.duration.is_zero());
        c
    }
}
