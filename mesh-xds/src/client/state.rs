//! The client half of the State-of-the-World protocol as a state machine,
//! free of I/O: responses and timer ticks in, requests out, plus the
//! resources last accepted and whether they form a consistent set.
//!
//! Rules (the xDS protocol's, as Envoy and gRPC clients apply them):
//! - A response is accepted whole or not at all: every resource must have
//!   the response's type and decode; then it is ACKed with its
//!   `version_info` and nonce. Otherwise it is NACKed with the previously
//!   ACKed version and an `error_detail` naming the resource, and the last
//!   good resources stay.
//! - Listener and Cluster responses carry the complete set (absence means
//!   removal); RouteConfiguration and ClusterLoadAssignment responses carry
//!   some of the subscribed names, and the others keep their value.
//! - Every request carries the current subscription, so an ACK also
//!   carries a subscription change and a request the server finds stale is
//!   made up for by the next ACK.
//! - A subscribed RDS/EDS name that stays unanswered for the
//!   does-not-exist timeout while connected is taken as absent (gRPC's
//!   does-not-exist timer); so is a cluster a route sends to that CDS lacks,
//!   after a shorter grace. Timers stop on disconnect and start again on
//!   the next stream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType},
    Cluster,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use tokio::time::Instant;

use super::validate;
use super::{NackInfo, TypeSync};
use crate::decode::decode_listener;
use crate::encode::Resources;
use crate::types;

/// The four types, in the order they are first requested.
pub(crate) const TYPES: [&str; 4] = [
    types::LISTENER,
    types::CLUSTER,
    types::ROUTE,
    types::ENDPOINT,
];

/// gRPC's code for a NACK (`INVALID_ARGUMENT`).
pub(super) const INVALID_ARGUMENT: i32 = 3;

#[derive(Debug, Default)]
pub(super) struct TypeState {
    /// Last ACKed version.
    pub(super) version: String,
    /// Last nonce received on the current stream.
    pub(super) nonce: String,
    /// Named subscription (RDS, EDS); LDS and CDS are wildcard.
    pub(super) names: BTreeSet<String>,
    pub(super) last_nack: Option<NackInfo>,
    pub(super) nacks: u64,
    pub(super) acked: bool,
}

/// A named subscription that changed.
#[derive(Debug)]
pub(super) struct Resubscribed {
    pub type_url: &'static str,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// What handling a response produced.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Requests to send, in order.
    pub requests: Vec<DiscoveryRequest>,
    /// Whether the response was accepted (the resources may have changed).
    pub accepted: bool,
}

/// The client's protocol state and last accepted resources.
#[derive(Debug)]
pub(crate) struct SotwState {
    pub(super) types: BTreeMap<&'static str, TypeState>,
    /// Client-side listeners by name, with the route config each names.
    pub(super) listeners: BTreeMap<String, (Listener, String)>,
    /// Server-side inbound listeners by name.
    pub(super) inbound: BTreeMap<String, Listener>,
    pub(super) routes: BTreeMap<String, RouteConfiguration>,
    pub(super) clusters: BTreeMap<String, Cluster>,
    pub(super) endpoints: BTreeMap<String, ClusterLoadAssignment>,
    pub(super) have_lds: bool,
    pub(super) have_cds: bool,
    pub(super) absent: BTreeSet<(&'static str, String)>,
    /// Delta only: the version of each resource held.
    pub(super) versions: BTreeMap<(&'static str, String), String>,
    pub(super) pending: BTreeMap<(&'static str, String), Instant>,
    pub(super) timeout: Duration,
    /// How long a cluster a route sends to may be missing from CDS.
    pub(super) cluster_grace: Duration,
    pub(super) connected: bool,
    /// Subscribe only to these listeners, by name (a workload's server
    /// listeners), and to no other type.
    pub(super) only_listeners: Option<BTreeSet<String>>,
}

pub(super) fn short(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

fn named(type_url: &str) -> bool {
    type_url == types::ROUTE || type_url == types::ENDPOINT
}

/// The name EDS knows a cluster by, when it is an EDS cluster.
fn eds_name(c: &Cluster) -> Option<String> {
    let eds = matches!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
    );
    if !eds {
        return None;
    }
    Some(
        c.eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| c.name.clone()),
    )
}

/// Clusters a route configuration sends to (routes, splits and mirrors).
fn route_clusters(rc: &RouteConfiguration, out: &mut BTreeSet<String>) {
    for r in rc.virtual_hosts.iter().flat_map(|v| &v.routes) {
        let Some(Action::Route(ra)) = &r.action else {
            continue;
        };
        match &ra.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => {
                out.insert(c.clone());
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                out.extend(w.clusters.iter().map(|c| c.name.clone()));
            }
            _ => {}
        }
        out.extend(ra.request_mirror_policies.iter().map(|m| m.cluster.clone()));
    }
}

impl SotwState {
    pub(crate) fn new(does_not_exist: Duration, cluster_grace: Duration) -> Self {
        Self {
            types: TYPES.iter().map(|t| (*t, TypeState::default())).collect(),
            listeners: BTreeMap::new(),
            inbound: BTreeMap::new(),
            routes: BTreeMap::new(),
            clusters: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            have_lds: false,
            have_cds: false,
            absent: BTreeSet::new(),
            versions: BTreeMap::new(),
            pending: BTreeMap::new(),
            timeout: does_not_exist,
            cluster_grace,
            connected: false,
            only_listeners: None,
        }
    }

    /// A state that subscribes only to the listeners `names` (LDS by name,
    /// no other type): what a server needs of a control plane that, like
    /// istiod, sends server listeners only to a client that names them.
    pub(crate) fn listeners_only(does_not_exist: Duration, names: BTreeSet<String>) -> Self {
        let mut st = Self::new(does_not_exist, does_not_exist);
        st.ts(types::LISTENER).names = names.clone();
        st.only_listeners = Some(names);
        st
    }

    pub(super) fn ts(&mut self, type_url: &str) -> &mut TypeState {
        // Only the four known types are ever looked up.
        self.types.entry(type_static(type_url)).or_default()
    }

    fn request(&self, type_url: &'static str) -> DiscoveryRequest {
        let st = self.types.get(type_url);
        let mut resource_names: Vec<String> = st
            .map(|s| s.names.iter().cloned().collect())
            .unwrap_or_default();
        if type_url == types::CLUSTER && !resource_names.is_empty() {
            // Wildcard and the clusters the routes name: a server that
            // builds only named clusters (istiod's gRPC generator) answers
            // the names, one that sends every cluster (meshd) the wildcard.
            resource_names.insert(0, "*".to_string());
        }
        DiscoveryRequest {
            type_url: type_url.to_string(),
            version_info: st.map(|s| s.version.clone()).unwrap_or_default(),
            response_nonce: st.map(|s| s.nonce.clone()).unwrap_or_default(),
            resource_names,
            ..Default::default()
        }
    }

    /// A new stream: the requests to send first (LDS and CDS wildcard, and
    /// the named subscriptions already known, e.g. from the cache).
    pub(crate) fn on_connect(&mut self, now: Instant) -> Vec<DiscoveryRequest> {
        self.connected = true;
        for st in self.types.values_mut() {
            st.nonce.clear();
        }
        self.arm_timers(now);
        if self.only_listeners.is_some() {
            return vec![self.request(types::LISTENER)];
        }
        TYPES
            .iter()
            .filter(|t| !named(t) || self.types.get(*t).is_some_and(|s| !s.names.is_empty()))
            .map(|t| self.request(t))
            .collect()
    }

    /// The stream ended: timers stop (they restart on the next stream).
    pub(crate) fn on_disconnect(&mut self) {
        self.connected = false;
        self.pending.clear();
    }

    /// Handles one response.
    pub(crate) fn on_response(&mut self, resp: &DiscoveryResponse, now: Instant) -> Step {
        let type_url = type_static(&resp.type_url);
        if type_url.is_empty() {
            // Never subscribed: refuse it without touching any state.
            return Step {
                requests: vec![DiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    error_detail: Some(Status {
                        code: INVALID_ARGUMENT,
                        message: format!("type {} was not subscribed to", resp.type_url),
                        details: Vec::new(),
                    }),
                    ..Default::default()
                }],
                accepted: false,
            };
        }
        self.ts(type_url).nonce = resp.nonce.clone();
        if let Err(e) = self.apply(type_url, resp) {
            let message = format!("{} version {}: {e}", short(type_url), resp.version_info);
            tracing::warn!(%message, "xDS response rejected (NACK); the last good resources stay");
            let st = self.ts(type_url);
            st.nacks += 1;
            st.last_nack = Some(NackInfo {
                version: resp.version_info.clone(),
                message: message.clone(),
            });
            let mut nack = self.request(type_url);
            nack.error_detail = Some(Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            });
            return Step {
                requests: vec![nack],
                accepted: false,
            };
        }
        let st = self.ts(type_url);
        st.version = resp.version_info.clone();
        st.last_nack = None;
        st.acked = true;
        let changed = self.resubscribe(now);
        let mut requests = vec![self.request(type_url)];
        requests.extend(
            changed
                .into_iter()
                .filter(|c| c.type_url != type_url)
                .map(|c| self.request(c.type_url)),
        );
        Step {
            requests,
            accepted: true,
        }
    }

    fn apply(&mut self, type_url: &'static str, resp: &DiscoveryResponse) -> Result<(), String> {
        if let Some(a) = resp.resources.iter().find(|a| a.type_url != type_url) {
            return Err(format!(
                "a resource of type {} in a {} response",
                a.type_url, type_url
            ));
        }
        match type_url {
            types::LISTENER => {
                let (client, inbound) =
                    validate::listeners(validate::decode_all(&resp.resources)?)?;
                self.listeners = client
                    .into_iter()
                    .map(|(l, r)| (l.name.clone(), (l, r)))
                    .collect();
                self.inbound = inbound.into_iter().map(|l| (l.name.clone(), l)).collect();
                self.have_lds = true;
                let inbound = &self.inbound;
                self.absent
                    .retain(|(t, n)| *t != types::LISTENER || !inbound.contains_key(n));
            }
            types::ROUTE => {
                let all: Vec<RouteConfiguration> = validate::decode_all(&resp.resources)?;
                validate::routes(&all)?;
                for rc in all {
                    self.absent.remove(&(types::ROUTE, rc.name.clone()));
                    self.routes.insert(rc.name.clone(), rc);
                }
            }
            types::CLUSTER => {
                let all: Vec<Cluster> = validate::decode_all(&resp.resources)?;
                validate::clusters(&all)?;
                self.absent.retain(|(t, _)| *t != types::CLUSTER);
                self.clusters = all.into_iter().map(|c| (c.name.clone(), c)).collect();
                self.have_cds = true;
            }
            types::ENDPOINT => {
                let all: Vec<ClusterLoadAssignment> = validate::decode_all(&resp.resources)?;
                validate::endpoints(&all)?;
                for cla in all {
                    self.absent
                        .remove(&(types::ENDPOINT, cla.cluster_name.clone()));
                    self.endpoints.insert(cla.cluster_name.clone(), cla);
                }
            }
            other => return Err(format!("type {other} was not subscribed to")),
        }
        Ok(())
    }

    pub(super) fn wanted_routes(&self) -> BTreeSet<String> {
        self.listeners.values().map(|(_, r)| r.clone()).collect()
    }

    pub(super) fn wanted_endpoints(&self) -> BTreeSet<String> {
        self.clusters.values().filter_map(eds_name).collect()
    }

    fn wanted_clusters(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for name in self.wanted_routes() {
            if let Some(rc) = self.routes.get(&name) {
                route_clusters(rc, &mut out);
            }
        }
        out
    }

    /// Brings the RDS and EDS subscriptions in line with the listeners and
    /// clusters; returns the types whose subscription changed.
    pub(super) fn resubscribe(&mut self, now: Instant) -> Vec<Resubscribed> {
        let mut changed = Vec::new();
        if self.only_listeners.is_some() {
            self.arm_timers(now);
            return changed;
        }
        for (t, want) in [
            (types::ROUTE, self.wanted_routes()),
            (types::CLUSTER, self.wanted_clusters()),
            (types::ENDPOINT, self.wanted_endpoints()),
        ] {
            let have = &self.ts(t).names;
            if *have != want {
                let added = want.difference(have).cloned().collect();
                let removed = have.difference(&want).cloned().collect();
                match t {
                    types::ROUTE => self.routes.retain(|k, _| want.contains(k)),
                    types::ENDPOINT => self.endpoints.retain(|k, _| want.contains(k)),
                    // CDS is wildcard too: every cluster a response carries
                    // stays until a response leaves it out.
                    _ => {}
                }
                self.versions
                    .retain(|(tt, n), _| *tt == types::CLUSTER || *tt != t || want.contains(n));
                self.absent.retain(|(tt, n)| *tt != t || want.contains(n));
                self.ts(t).names = want;
                changed.push(Resubscribed {
                    type_url: t,
                    added,
                    removed,
                });
            }
        }
        self.arm_timers(now);
        changed
    }

    /// The names still missing, by type.
    fn missing(&self) -> BTreeSet<(&'static str, String)> {
        let mut out = BTreeSet::new();
        if let Some(names) = &self.only_listeners {
            for n in names {
                if !self.inbound.contains_key(n) && !self.listeners.contains_key(n) {
                    out.insert((types::LISTENER, n.clone()));
                }
            }
            out.retain(|k| !self.absent.contains(k));
            return out;
        }
        for n in self.wanted_routes() {
            if !self.routes.contains_key(&n) {
                out.insert((types::ROUTE, n));
            }
        }
        if self.have_cds {
            for n in self.wanted_clusters() {
                if !self.clusters.contains_key(&n) {
                    out.insert((types::CLUSTER, n));
                }
            }
        }
        for n in self.wanted_endpoints() {
            if !self.endpoints.contains_key(&n) {
                out.insert((types::ENDPOINT, n));
            }
        }
        out.retain(|k| !self.absent.contains(k));
        out
    }

    pub(super) fn arm_timers(&mut self, now: Instant) {
        let missing = self.missing();
        self.pending.retain(|k, _| missing.contains(k));
        if !self.connected {
            return;
        }
        for k in missing {
            // CDS is wildcard and complete: a cluster it lacks only gets a
            // short grace (for a server that sends routes before their
            // clusters), so a route to an undefined subset does not hold
            // back the whole model for the full timeout.
            let wait = if k.0 == types::CLUSTER {
                self.cluster_grace
            } else {
                self.timeout
            };
            self.pending.entry(k).or_insert(now + wait);
        }
    }

    /// When the next does-not-exist timer fires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().min().copied()
    }

    /// Fires the timers due at `now`; true when some name became absent.
    pub(crate) fn on_timer(&mut self, now: Instant) -> bool {
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            tracing::warn!(
                type_url = k.0,
                name = %k.1,
                "xDS resource not received within the does-not-exist timeout; treating it as absent"
            );
            self.pending.remove(k);
            self.absent.insert(k.clone());
        }
        !due.is_empty()
    }

    /// The accepted resources when they form a consistent set: listeners,
    /// the route configs they name, every cluster, and the load assignment
    /// of each EDS cluster (renamed to the cluster it belongs to).
    pub(crate) fn assemble(&self) -> Option<Resources> {
        if let Some(names) = &self.only_listeners {
            // Every name answered, or declared absent by its timer.
            let settled = self.have_lds
                || names
                    .iter()
                    .all(|n| self.absent.contains(&(types::LISTENER, n.clone())));
            if !settled || !self.missing().is_empty() {
                return None;
            }
            return Some(Resources {
                listeners: self.inbound.values().cloned().collect(),
                ..Resources::default()
            });
        }
        if !self.have_lds || !self.have_cds || !self.missing().is_empty() {
            return None;
        }
        let wanted = self.wanted_routes();
        Some(Resources {
            listeners: self
                .listeners
                .values()
                .map(|(l, _)| l.clone())
                .chain(self.inbound.values().cloned())
                .collect(),
            routes: self
                .routes
                .iter()
                .filter(|(k, _)| wanted.contains(*k))
                .map(|(_, r)| r.clone())
                .collect(),
            clusters: self.clusters.values().cloned().collect(),
            endpoints: self
                .clusters
                .values()
                .filter_map(|c| {
                    let mut cla = self.endpoints.get(&eds_name(c)?)?.clone();
                    cla.cluster_name = c.name.clone();
                    Some(cla)
                })
                .collect(),
        })
    }

    /// Starts from resources kept on disk: they count as received, and
    /// their RDS/EDS names are subscribed on the next stream.
    pub(crate) fn load(&mut self, r: Resources) {
        let (client, inbound): (Vec<Listener>, Vec<Listener>) = r
            .listeners
            .into_iter()
            .partition(|l| l.api_listener.is_some());
        self.listeners = client
            .into_iter()
            .filter_map(|l| {
                let route = decode_listener(&l).ok()?.route_config_name;
                Some((l.name.clone(), (l, route)))
            })
            .collect();
        self.inbound = inbound.into_iter().map(|l| (l.name.clone(), l)).collect();
        self.routes = r.routes.into_iter().map(|x| (x.name.clone(), x)).collect();
        self.clusters = r
            .clusters
            .into_iter()
            .map(|x| (x.name.clone(), x))
            .collect();
        self.endpoints = r
            .endpoints
            .into_iter()
            .map(|x| (x.cluster_name.clone(), x))
            .collect();
        self.have_lds = true;
        self.have_cds = true;
        self.resubscribe(Instant::now());
    }

    /// Per-type sync state for [`super::XdsStatus`].
    pub(crate) fn sync(&self) -> BTreeMap<String, TypeSync> {
        self.types
            .iter()
            .map(|(t, s)| {
                (
                    t.to_string(),
                    TypeSync {
                        acked_version: s.acked.then(|| s.version.clone()),
                        last_nack: s.last_nack.clone(),
                        nacks: s.nacks,
                        subscribed: s.names.iter().cloned().collect(),
                        does_not_exist: self
                            .absent
                            .iter()
                            .filter(|(tt, _)| tt == t)
                            .map(|(_, n)| n.clone())
                            .collect(),
                    },
                )
            })
            .collect()
    }
}

/// The static type URL for a known type; unknown ones map to an empty
/// string (they are NACKed).
pub(super) fn type_static(type_url: &str) -> &'static str {
    TYPES
        .iter()
        .find(|t| **t == type_url)
        .copied()
        .unwrap_or("")
}
