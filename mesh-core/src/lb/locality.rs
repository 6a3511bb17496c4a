//! Locality-aware load balancing as Istio configures Envoy: endpoints are
//! ordered into priorities by how close they are to the client (same
//! region/zone/subzone first, then same zone, same region, the `failover`
//! region, everything else), or by `failoverPriority` labels; and
//! `distribute` turns into per-locality weights.
//!
//! Like Istio, priorities are only assigned when outlier detection is
//! configured (otherwise nothing ever fails over, so Istio leaves every
//! endpoint at priority 0).

use crate::config::common::Labels;
use crate::config::networking::destination_rule::{Distribute, Failover};

/// Kubernetes label carrying a node's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Kubernetes label carrying a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Istio's label carrying a subzone.
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// A `region/zone/subzone` locality; empty parts are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Subzone.
    pub subzone: String,
}

impl Locality {
    /// Parses `region/zone/subzone` (missing parts stay empty).
    pub fn parse(s: &str) -> Self {
        let mut it = s.split('/');
        let mut next = || it.next().unwrap_or("").to_string();
        Self {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    /// The client's locality from its topology labels.
    pub fn from_labels(labels: &Labels) -> Self {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        Self {
            region: get(REGION_LABEL),
            zone: get(ZONE_LABEL),
            subzone: get(SUBZONE_LABEL),
        }
    }

    /// True when the region is unknown.
    pub fn is_unknown(&self) -> bool {
        self.region.is_empty()
    }

    /// Matches a pattern like `us-west`, `us-west/zone1/*` or `*`.
    pub fn matches(&self, pattern: &str) -> bool {
        let parts = [&self.region, &self.zone, &self.subzone];
        for (i, seg) in pattern.split('/').enumerate() {
            if seg == "*" {
                return true;
            }
            match parts.get(i) {
                Some(p) if p.as_str() == seg => {}
                _ => return false,
            }
        }
        true
    }
}

/// Proximity rank of `ep` seen from `client`: 0 same subzone, 1 same zone,
/// 2 same region, 3.. the `failover` regions in order, then everything
/// else.
pub fn proximity_rank(client: &Locality, ep: &Locality, failover: &[Failover]) -> u32 {
    if client.is_unknown() {
        return 0;
    }
    if ep.region == client.region {
        if ep.zone == client.zone {
            if ep.subzone == client.subzone {
                return 0;
            }
            return 1;
        }
        return 2;
    }
    let targets = failover.iter().filter(|f| f.from == client.region);
    for (i, f) in targets.enumerate() {
        if f.to == ep.region {
            return 3 + i as u32;
        }
    }
    3 + failover.len() as u32
}

/// Rank by `failoverPriority`: the number of labels, in order, the
/// endpoint fails to share with the client (matching stops at the first
/// miss). `label=value` entries compare with the given value; topology
/// labels compare localities.
pub fn label_rank(
    priority: &[String],
    client_labels: &Labels,
    client: &Locality,
    ep_labels: &Labels,
    ep: &Locality,
) -> u32 {
    let mut matched = 0;
    for entry in priority {
        let ok = if let Some((k, v)) = entry.split_once('=') {
            ep_labels.get(k).is_some_and(|x| x == v)
        } else {
            match entry.as_str() {
                REGION_LABEL => !client.region.is_empty() && ep.region == client.region,
                ZONE_LABEL => !client.zone.is_empty() && ep.zone == client.zone,
                SUBZONE_LABEL => !client.subzone.is_empty() && ep.subzone == client.subzone,
                k => match (client_labels.get(k), ep_labels.get(k)) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                },
            }
        };
        if !ok {
            break;
        }
        matched += 1;
    }
    priority.len() as u32 - matched
}

/// Weights from `distribute` for the endpoints' localities: the first rule
/// whose `from` matches the client applies; each `to` weight is shared
/// evenly by the distinct localities it matches; localities no `to` names
/// get 0 (no traffic). `None` when no rule applies.
pub fn distribute_weights(
    rules: &[Distribute],
    client: &Locality,
    localities: &[Locality],
) -> Option<Vec<f64>> {
    let rule = rules.iter().find(|r| client.matches(&r.from))?;
    let mut weights = vec![0.0; localities.len()];
    for (pattern, w) in &rule.to {
        let mut distinct: Vec<&Locality> =
            localities.iter().filter(|l| l.matches(pattern)).collect();
        distinct.sort();
        distinct.dedup();
        if distinct.is_empty() {
            continue;
        }
        let share = f64::from(*w) / distinct.len() as f64;
        for (i, l) in localities.iter().enumerate() {
            if weights[i] == 0.0 && l.matches(pattern) {
                weights[i] = share;
            }
        }
    }
    Some(weights)
}
