//! Load balancing as pure state: which endpoint of a cluster serves the
//! next request, given which endpoints are healthy, how loaded they are
//! and (for consistent hashing) the request's hash.
//!
//! The algorithms are Envoy's, configured the way Istio configures them:
//!
//! - `ROUND_ROBIN`: smooth weighted round robin;
//! - `LEAST_REQUEST` (also `UNSPECIFIED` and `LEAST_CONN`, Istio's
//!   default): power of two choices, the one with fewer active requests
//!   (relative to weight) wins;
//! - `RANDOM`: weighted random;
//! - consistent hash: ring hash ([`ring`]) or Maglev ([`maglev`]) over
//!   XXH64 ([`hash`]), with the key from a header, cookie, source IP or
//!   query parameter ([`hash_key`]); a request with no key picks at random.
//!
//! Around the algorithm: priorities by locality or `failoverPriority`
//! labels ([`locality`]), with Envoy's overprovisioning factor 1.4 (a
//! priority keeps all its traffic while 1/1.4 = 72% of its endpoints are
//! healthy, then spills the rest to the next priority); `distribute`
//! locality weights; panic mode (when the healthy share falls below the
//! panic threshold, the chosen priority balances over all its endpoints,
//! healthy or not); slow-start warmup for new endpoints (their weight
//! ramps from `minimumPercent` to full over `duration`, shaped by
//! `aggression`; round robin and least request only, as in Envoy); and
//! avoidance of endpoints a retry already tried when another candidate
//! exists.
//!
//! Not here: health itself (the outlier detector's job, passed in as a
//! view), counting active requests, and randomness (passed in as a
//! [`Rng`]).

mod config;
pub mod hash;
pub mod hash_key;
pub mod locality;
pub mod maglev;
pub mod ring;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use crate::config::common::Labels;

pub use config::{LbConfig, Warmup};
pub use hash_key::HashSource;
pub use locality::Locality;

/// Envoy's overprovisioning factor, in percent.
pub const OVERPROVISIONING_PERCENT: u64 = 140;
/// Envoy's default healthy panic threshold.
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;
/// Istio's default warmup minimum percent.
pub const DEFAULT_WARMUP_MIN_PERCENT: f64 = 10.0;

/// A source of randomness (the caller owns the generator).
pub trait Rng {
    /// A uniformly distributed 64-bit value.
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64: a tiny, fast, statistically decent generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn below(rng: &mut dyn Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn unit(rng: &mut dyn Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices by active requests.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Ring hash with at least this many points.
    RingHash {
        /// Minimum ring size.
        min_ring_size: u64,
    },
    /// Maglev with this table size.
    Maglev {
        /// Table size (prime).
        table_size: u64,
    },
}

impl Algorithm {
    fn is_hash(self) -> bool {
        matches!(self, Algorithm::RingHash { .. } | Algorithm::Maglev { .. })
    }
}

/// Who is balancing: the client's locality and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's locality.
    pub locality: Locality,
    /// The client's labels (for `failoverPriority`).
    pub labels: Labels,
}

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbEndpoint<K> {
    /// Identity (and state key) of the endpoint.
    pub key: K,
    /// Name hashed to place it on a ring or table (its address).
    pub name: String,
    /// Weight (0 counts as 1).
    pub weight: u32,
    /// Locality.
    pub locality: Locality,
    /// Labels.
    pub labels: Labels,
}

/// What the caller knows about an endpoint right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostView {
    /// Not ejected.
    pub healthy: bool,
    /// Requests in flight.
    pub active: u32,
    /// An earlier attempt of this request used it.
    pub tried: bool,
}

/// The caller's view of a cluster's endpoints at the moment of a pick.
///
/// Any `Fn(usize) -> HostView` is one. A caller that can tell cheaply that
/// every endpoint is healthy and none was tried by this request says so
/// with [`Hosts::all_healthy_untried`]: the balancer then looks at only the
/// endpoints it draws (two for least request) instead of all of them, so a
/// pick costs the same with 3 endpoints or 3000.
pub trait Hosts {
    /// The view of endpoint `i`.
    fn view(&self, i: usize) -> HostView;

    /// True when no endpoint is ejected and this request tried none.
    fn all_healthy_untried(&self) -> bool {
        false
    }
}

impl<F: Fn(usize) -> HostView> Hosts for F {
    fn view(&self, i: usize) -> HostView {
        self(i)
    }
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// Index into [`Balancer::endpoints`].
    pub index: usize,
    /// Its priority.
    pub priority: usize,
    /// True when chosen in panic mode (health ignored).
    pub panic: bool,
}

#[derive(Debug, Clone)]
enum Table {
    Ring(ring::Ring),
    Maglev(maglev::Maglev),
}

#[derive(Debug, Clone, Default)]
struct EpState {
    added: Option<Instant>,
    rr_current: f64,
}

/// The balancer of one cluster over a set of endpoints keyed by `K`.
#[derive(Debug, Clone)]
pub struct Balancer<K: Eq + Hash + Clone> {
    cfg: LbConfig,
    client: ClientInfo,
    endpoints: Vec<LbEndpoint<K>>,
    state: Vec<EpState>,
    priority: Vec<usize>,
    priorities: Vec<Vec<usize>>,
    locality_weight: Option<Vec<f64>>,
    tables: HashMap<usize, (Vec<usize>, Table)>,
    // Reused by every pick so a request allocates nothing here.
    scratch: Scratch,
    // Whether a pick over all-healthy, untried endpoints may skip the
    // scan: equal weights, no locality weights; `warm_until`: when the
    // last slow start ends (weights are equal only after it).
    uniform: bool,
    warm_until: Option<Instant>,
}

/// Per-pick working buffers, kept between picks.
#[derive(Debug, Clone, Default)]
struct Scratch {
    views: Vec<HostView>,
    health: Vec<u64>,
    loads: Vec<u64>,
    candidates: Vec<usize>,
    untried: Vec<usize>,
    weights: Vec<f64>,
}

impl<K: Eq + Hash + Clone> Balancer<K> {
    /// A balancer over `endpoints`; they start warm (no slow start for
    /// the initial set).
    pub fn new(cfg: LbConfig, client: ClientInfo, endpoints: Vec<LbEndpoint<K>>) -> Self {
        let mut b = Self {
            cfg,
            client,
            endpoints: Vec::new(),
            state: Vec::new(),
            priority: Vec::new(),
            priorities: Vec::new(),
            locality_weight: None,
            tables: HashMap::new(),
            scratch: Scratch::default(),
            uniform: false,
            warm_until: None,
        };
        b.state = vec![EpState::default(); endpoints.len()];
        b.endpoints = endpoints;
        b.rebuild();
        b
    }

    /// The endpoints, in the order [`Picked::index`] refers to.
    pub fn endpoints(&self) -> &[LbEndpoint<K>] {
        &self.endpoints
    }

    /// The settings in force.
    pub fn config(&self) -> &LbConfig {
        &self.cfg
    }

    /// Who is balancing (kept for updates that change only endpoints).
    pub fn client(&self) -> &ClientInfo {
        &self.client
    }

    /// Priority of each endpoint (0 is tried first).
    pub fn priorities(&self) -> &[usize] {
        &self.priority
    }

    /// Replaces settings and/or endpoints. Endpoints that were already
    /// there keep their state; new ones start their warmup at `now`.
    pub fn update(
        &mut self,
        cfg: LbConfig,
        client: ClientInfo,
        endpoints: Vec<LbEndpoint<K>>,
        now: Instant,
    ) {
        let mut old: HashMap<K, EpState> = self
            .endpoints
            .drain(..)
            .zip(self.state.drain(..))
            .map(|(e, s)| (e.key, s))
            .collect();
        self.state = endpoints
            .iter()
            .map(|e| {
                old.remove(&e.key).unwrap_or(EpState {
                    added: Some(now),
                    rr_current: 0.0,
                })
            })
            .collect();
        self.endpoints = endpoints;
        self.cfg = cfg;
        self.client = client;
        self.tables.clear();
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let n = self.endpoints.len();
        let ranks: Vec<(u32, u32)> = self
            .endpoints
            .iter()
            .map(|e| {
                if !self.cfg.priorities {
                    return (0, 0);
                }
                let prox = locality::proximity_rank(
                    &self.client.locality,
                    &e.locality,
                    &self.cfg.failover,
                );
                if self.cfg.failover_priority.is_empty() {
                    (0, prox)
                } else {
                    let lr = locality::label_rank(
                        &self.cfg.failover_priority,
                        &self.client.labels,
                        &self.client.locality,
                        &e.labels,
                        &e.locality,
                    );
                    (
                        lr,
                        if self.cfg.failover.is_empty() {
                            0
                        } else {
                            prox
                        },
                    )
                }
            })
            .collect();
        let mut distinct = ranks.clone();
        distinct.sort_unstable();
        distinct.dedup();
        self.priority = ranks
            .iter()
            .map(|r| distinct.partition_point(|d| d < r))
            .collect();
        self.priorities = vec![Vec::new(); distinct.len()];
        for i in 0..n {
            self.priorities[self.priority[i]].push(i);
        }
        let locs: Vec<Locality> = self.endpoints.iter().map(|e| e.locality.clone()).collect();
        self.locality_weight =
            locality::distribute_weights(&self.cfg.distribute, &self.client.locality, &locs);
        let first = self.endpoints.first().map(|e| e.weight.max(1));
        self.uniform = self.locality_weight.is_none()
            && self
                .endpoints
                .iter()
                .all(|e| Some(e.weight.max(1)) == first);
        self.warm_until = match self.cfg.warmup {
            Some(wu) if !self.cfg.algorithm.is_hash() => self
                .state
                .iter()
                .filter_map(|s| s.added)
                .max()
                .map(|a| a + wu.duration),
            _ => None,
        };
    }

    fn eff_weight(&self, i: usize, now: Instant) -> f64 {
        let w = f64::from(self.endpoints[i].weight.max(1));
        match (self.cfg.warmup, self.state[i].added) {
            (Some(wu), Some(added)) if !self.cfg.algorithm.is_hash() => {
                w * wu.factor(now.saturating_duration_since(added))
            }
            _ => w,
        }
    }

    /// Picks an endpoint. `view(i)` tells the caller's view of endpoint
    /// `i`; `hash` is the request's hash for consistent hashing (`None`
    /// picks at random). `None` when no endpoint may serve.
    pub fn pick(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        hash: Option<u64>,
        view: &dyn Fn(usize) -> HostView,
    ) -> Option<Picked> {
        self.pick_hosts(now, rng, hash, &view)
    }

    /// [`Balancer::pick`] over a [`Hosts`], which may let the pick skip
    /// looking at every endpoint.
    pub fn pick_hosts(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        hash: Option<u64>,
        hosts: &dyn Hosts,
    ) -> Option<Picked> {
        if self.endpoints.is_empty() {
            return None;
        }
        if hosts.all_healthy_untried() {
            if let Some(p) = self.pick_all_healthy(now, rng, hash, hosts) {
                return Some(p);
            }
        }
        let mut s = std::mem::take(&mut self.scratch);
        let picked = self.pick_with(&mut s, now, rng, hash, &|i| hosts.view(i));
        self.scratch = s;
        picked
    }

    /// The pick when every endpoint is healthy and untried, without
    /// looking at each: priority 0 takes all traffic then (its health is
    /// 100%), nothing is avoided, and with equal weights least request and
    /// random draw uniformly. `None` when the general pick must decide
    /// (unequal or warming weights, locality weights, round robin).
    fn pick_all_healthy(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        hash: Option<u64>,
        hosts: &dyn Hosts,
    ) -> Option<Picked> {
        if !self.uniform || self.warm_until.is_some_and(|w| now < w) {
            return None;
        }
        let members = self.priorities.first()?;
        let n = members.len();
        let at = |k: usize| members.get(k).copied();
        let index = match self.cfg.algorithm {
            Algorithm::RoundRobin => return None,
            Algorithm::Random => at(below(rng, n))?,
            Algorithm::LeastRequest => {
                let a = below(rng, n);
                if n == 1 {
                    at(a)?
                } else {
                    let b = (a + 1 + below(rng, n - 1)) % n;
                    let (ia, ib) = (at(a)?, at(b)?);
                    if hosts.view(ib).active < hosts.view(ia).active {
                        ib
                    } else {
                        ia
                    }
                }
            }
            Algorithm::RingHash { .. } | Algorithm::Maglev { .. } => {
                let mut s = std::mem::take(&mut self.scratch);
                s.candidates.clear();
                s.candidates.extend_from_slice(members);
                let index = self.pick_hash(0, &s.candidates, hash, rng, &|_| true);
                self.scratch = s;
                index?
            }
        };
        Some(Picked {
            index,
            priority: 0,
            panic: false,
        })
    }

    fn pick_with(
        &mut self,
        s: &mut Scratch,
        now: Instant,
        rng: &mut dyn Rng,
        hash: Option<u64>,
        view: &dyn Fn(usize) -> HostView,
    ) -> Option<Picked> {
        s.views.clear();
        s.views.extend((0..self.endpoints.len()).map(view));
        let views = &s.views;
        let lw = self.locality_weight.as_deref();
        let usable = |i: usize| lw.is_none_or(|w| w[i] > 0.0);
        // Health per priority, with overprovisioning.
        s.health.clear();
        s.health.extend(self.priorities.iter().map(|members| {
            let total = members.iter().filter(|i| usable(**i)).count() as u64;
            let healthy = members
                .iter()
                .filter(|i| usable(**i) && views[**i].healthy)
                .count() as u64;
            (OVERPROVISIONING_PERCENT * healthy)
                .checked_div(total)
                .map_or(0, |h| h.min(100))
        }));
        let total_health: u64 = s.health.iter().sum::<u64>().min(100);
        let panic = total_health < u64::from(self.cfg.panic_threshold);
        s.loads.clear();
        s.loads.resize(s.health.len(), 0);
        if total_health == 0 {
            if !panic {
                return None;
            }
            let first = self
                .priorities
                .iter()
                .position(|m| m.iter().any(|i| usable(*i)))?;
            s.loads[first] = 100;
        } else {
            let mut remaining = 100u64;
            for (p, h) in s.health.iter().enumerate() {
                let l = (*h).min(remaining);
                s.loads[p] = l;
                remaining -= l;
            }
        }
        let sum: u64 = s.loads.iter().sum();
        let roll = match hash {
            Some(h) if self.cfg.algorithm.is_hash() => h % sum.max(1),
            _ => rng.next_u64() % sum.max(1),
        };
        let mut acc = 0;
        let mut prio = 0;
        for (p, l) in s.loads.iter().enumerate() {
            acc += l;
            if roll < acc {
                prio = p;
                break;
            }
        }
        let members = &self.priorities[prio];
        s.candidates.clear();
        s.candidates.extend(
            members
                .iter()
                .copied()
                .filter(|i| usable(*i) && (panic || views[*i].healthy)),
        );
        if s.candidates.is_empty() {
            return None;
        }
        s.untried.clear();
        s.untried
            .extend(s.candidates.iter().copied().filter(|i| !views[*i].tried));
        let avoid_tried = !s.untried.is_empty() && s.untried.len() < s.candidates.len();
        if self.cfg.algorithm.is_hash() {
            let index = self.pick_hash(prio, &s.candidates, hash, rng, &|i| {
                !avoid_tried || !views[i].tried
            })?;
            return Some(Picked {
                index,
                priority: prio,
                panic,
            });
        }
        if avoid_tried {
            std::mem::swap(&mut s.candidates, &mut s.untried);
        }
        if let Some(lw) = &self.locality_weight {
            s.candidates = self.pick_locality(&s.candidates, members, lw, views, rng);
        }
        let candidates = &s.candidates;
        s.weights.clear();
        s.weights
            .extend(candidates.iter().map(|i| self.eff_weight(*i, now)));
        let weights = &s.weights;
        let index = match self.cfg.algorithm {
            Algorithm::RoundRobin => {
                let total: f64 = weights.iter().sum();
                let mut best = 0;
                for (k, &i) in candidates.iter().enumerate() {
                    self.state[i].rr_current += weights[k];
                    if self.state[i].rr_current > self.state[candidates[best]].rr_current {
                        best = k;
                    }
                }
                self.state[candidates[best]].rr_current -= total;
                candidates[best]
            }
            Algorithm::Random => candidates[weighted(weights, rng)],
            _ => {
                let a = weighted(weights, rng);
                let b = if candidates.len() > 1 {
                    let mut b = weighted(weights, rng);
                    if b == a {
                        b = (a + 1 + below(rng, candidates.len() - 1)) % candidates.len();
                    }
                    b
                } else {
                    a
                };
                let load = |k: usize| f64::from(views[candidates[k]].active + 1) / weights[k];
                if load(b) < load(a) {
                    candidates[b]
                } else {
                    candidates[a]
                }
            }
        };
        Some(Picked {
            index,
            priority: prio,
            panic,
        })
    }

    fn pick_locality(
        &self,
        candidates: &[usize],
        members: &[usize],
        lw: &[f64],
        views: &[HostView],
        rng: &mut dyn Rng,
    ) -> Vec<usize> {
        let mut locs: Vec<&Locality> = candidates
            .iter()
            .map(|i| &self.endpoints[*i].locality)
            .collect();
        locs.sort();
        locs.dedup();
        let weights: Vec<f64> = locs
            .iter()
            .map(|l| {
                let in_loc: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|i| &&self.endpoints[*i].locality == l)
                    .collect();
                let healthy = in_loc.iter().filter(|i| views[**i].healthy).count() as f64;
                let frac = (1.4 * healthy / in_loc.len().max(1) as f64).min(1.0);
                let w = in_loc.first().map_or(0.0, |i| lw[*i]);
                // In panic every locality counts as it is.
                w * if frac > 0.0 { frac } else { 1.0 }
            })
            .collect();
        if weights.iter().all(|w| *w <= 0.0) {
            return candidates.to_vec();
        }
        let chosen = locs[weighted(&weights, rng)].clone();
        candidates
            .iter()
            .copied()
            .filter(|i| self.endpoints[*i].locality == chosen)
            .collect()
    }

    fn pick_hash(
        &mut self,
        prio: usize,
        candidates: &[usize],
        hash: Option<u64>,
        rng: &mut dyn Rng,
        allowed: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let fresh = self
            .tables
            .get(&prio)
            .is_some_and(|(members, _)| members == candidates);
        if !fresh {
            let hosts: Vec<(usize, String, u32)> = candidates
                .iter()
                .map(|i| {
                    let e = &self.endpoints[*i];
                    (*i, e.name.clone(), e.weight)
                })
                .collect();
            let table = match self.cfg.algorithm {
                Algorithm::Maglev { table_size } => {
                    Table::Maglev(maglev::Maglev::build(&hosts, table_size))
                }
                Algorithm::RingHash { min_ring_size } => {
                    Table::Ring(ring::Ring::build(&hosts, min_ring_size))
                }
                _ => return None,
            };
            self.tables.insert(prio, (candidates.to_vec(), table));
        }
        let h = hash.unwrap_or_else(|| rng.next_u64());
        let (_, table) = self.tables.get(&prio)?;
        match table {
            Table::Ring(r) => r.lookup(h, allowed),
            Table::Maglev(m) => m.lookup(h, allowed),
        }
    }
}

/// Index drawn with probability proportional to `weights`.
fn weighted(weights: &[f64], rng: &mut dyn Rng) -> usize {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return below(rng, weights.len());
    }
    let mut x = unit(rng) * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}
