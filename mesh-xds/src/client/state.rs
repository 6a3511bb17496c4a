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
//! - A subscribed RDS/EDS name, or a cluster a route sends to, that stays
//!   unanswered for the does-not-exist timeout while connected is taken as
//!   absent (gRPC's does-not-exist timer); timers stop on disconnect and
//!   start again on the next stream.

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
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio::time::Instant;

use super::{NackInfo, TypeSync};
use crate::decode::{decode_cluster, decode_listener, decode_route_configuration};
use crate::encode::Resources;
use crate::types::{self, unany};

/// The four types, in the order they are first requested.
pub(crate) const TYPES: [&str; 4] = [
    types::LISTENER,
    types::CLUSTER,
    types::ROUTE,
    types::ENDPOINT,
];

/// gRPC's code for a NACK (`INVALID_ARGUMENT`).
const INVALID_ARGUMENT: i32 = 3;

#[derive(Debug, Default)]
struct TypeState {
    /// Last ACKed version.
    version: String,
    /// Last nonce received on the current stream.
    nonce: String,
    /// Named subscription (RDS, EDS); LDS and CDS are wildcard.
    names: BTreeSet<String>,
    last_nack: Option<NackInfo>,
    nacks: u64,
    acked: bool,
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
    types: BTreeMap<&'static str, TypeState>,
    /// Client-side listeners by name, with the route config each names.
    listeners: BTreeMap<String, (Listener, String)>,
    routes: BTreeMap<String, RouteConfiguration>,
    clusters: BTreeMap<String, Cluster>,
    endpoints: BTreeMap<String, ClusterLoadAssignment>,
    have_lds: bool,
    have_cds: bool,
    absent: BTreeSet<(&'static str, String)>,
    pending: BTreeMap<(&'static str, String), Instant>,
    timeout: Duration,
    connected: bool,
}

fn short(type_url: &str) -> &str {
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

fn decode_all<T: prost::Message + prost::Name + Default>(
    resources: &[Any],
) -> Result<Vec<T>, String> {
    resources
        .iter()
        .enumerate()
        .map(|(i, a)| {
            unany::<T>(a).ok_or_else(|| {
                format!(
                    "resource #{i} is a {} that does not decode as {}",
                    a.type_url,
                    T::full_name()
                )
            })
        })
        .collect()
}

fn no_duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("{n}: sent twice in one response"));
        }
    }
    Ok(())
}

impl SotwState {
    pub(crate) fn new(does_not_exist: Duration) -> Self {
        Self {
            types: TYPES.iter().map(|t| (*t, TypeState::default())).collect(),
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            clusters: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            have_lds: false,
            have_cds: false,
            absent: BTreeSet::new(),
            pending: BTreeMap::new(),
            timeout: does_not_exist,
            connected: false,
        }
    }

    fn ts(&mut self, type_url: &str) -> &mut TypeState {
        // Only the four known types are ever looked up.
        self.types.entry(type_static(type_url)).or_default()
    }

    fn request(&self, type_url: &'static str) -> DiscoveryRequest {
        let st = self.types.get(type_url);
        DiscoveryRequest {
            type_url: type_url.to_string(),
            version_info: st.map(|s| s.version.clone()).unwrap_or_default(),
            response_nonce: st.map(|s| s.nonce.clone()).unwrap_or_default(),
            resource_names: st
                .map(|s| s.names.iter().cloned().collect())
                .unwrap_or_default(),
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
                .filter(|t| *t != type_url)
                .map(|t| self.request(t)),
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
                let all: Vec<Listener> = decode_all(&resp.resources)?;
                no_duplicates(all.iter().map(|l| l.name.as_str()))?;
                let mut next = BTreeMap::new();
                // Server-side (inbound) listeners are for gRPC servers, not
                // the outbound model.
                for l in all.into_iter().filter(|l| l.api_listener.is_some()) {
                    let cl = decode_listener(&l).map_err(|e| e.to_string())?;
                    next.insert(l.name.clone(), (l, cl.route_config_name));
                }
                self.listeners = next;
                self.have_lds = true;
            }
            types::ROUTE => {
                let all: Vec<RouteConfiguration> = decode_all(&resp.resources)?;
                no_duplicates(all.iter().map(|r| r.name.as_str()))?;
                for rc in &all {
                    decode_route_configuration(rc).map_err(|e| e.to_string())?;
                }
                for rc in all {
                    self.absent.remove(&(types::ROUTE, rc.name.clone()));
                    self.routes.insert(rc.name.clone(), rc);
                }
            }
            types::CLUSTER => {
                let all: Vec<Cluster> = decode_all(&resp.resources)?;
                no_duplicates(all.iter().map(|c| c.name.as_str()))?;
                for c in &all {
                    decode_cluster(c, None).map_err(|e| e.to_string())?;
                }
                self.absent.retain(|(t, _)| *t != types::CLUSTER);
                self.clusters = all.into_iter().map(|c| (c.name.clone(), c)).collect();
                self.have_cds = true;
            }
            types::ENDPOINT => {
                let all: Vec<ClusterLoadAssignment> = decode_all(&resp.resources)?;
                no_duplicates(all.iter().map(|c| c.cluster_name.as_str()))?;
                if all.iter().any(|c| c.cluster_name.is_empty()) {
                    return Err("a ClusterLoadAssignment without cluster_name".into());
                }
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

    fn wanted_routes(&self) -> BTreeSet<String> {
        self.listeners.values().map(|(_, r)| r.clone()).collect()
    }

    fn wanted_endpoints(&self) -> BTreeSet<String> {
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
    fn resubscribe(&mut self, now: Instant) -> Vec<&'static str> {
        let mut changed = Vec::new();
        for (t, want) in [
            (types::ROUTE, self.wanted_routes()),
            (types::ENDPOINT, self.wanted_endpoints()),
        ] {
            if self.ts(t).names != want {
                match t {
                    types::ROUTE => self.routes.retain(|k, _| want.contains(k)),
                    _ => self.endpoints.retain(|k, _| want.contains(k)),
                }
                self.absent.retain(|(tt, n)| *tt != t || want.contains(n));
                self.ts(t).names = want;
                changed.push(t);
            }
        }
        self.arm_timers(now);
        changed
    }

    /// The names still missing, by type.
    fn missing(&self) -> BTreeSet<(&'static str, String)> {
        let mut out = BTreeSet::new();
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

    fn arm_timers(&mut self, now: Instant) {
        let missing = self.missing();
        self.pending.retain(|k, _| missing.contains(k));
        if !self.connected {
            return;
        }
        for k in missing {
            self.pending.entry(k).or_insert(now + self.timeout);
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
        if !self.have_lds || !self.have_cds || !self.missing().is_empty() {
            return None;
        }
        let wanted = self.wanted_routes();
        Some(Resources {
            listeners: self.listeners.values().map(|(l, _)| l.clone()).collect(),
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
        self.listeners = r
            .listeners
            .into_iter()
            .filter_map(|l| {
                let route = decode_listener(&l).ok()?.route_config_name;
                Some((l.name.clone(), (l, route)))
            })
            .collect();
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
fn type_static(type_url: &str) -> &'static str {
    TYPES
        .iter()
        .find(|t| **t == type_url)
        .copied()
        .unwrap_or("")
}
