//! One simulated proxyless gRPC client: a node like Istio's gRPC bootstrap
//! writes, and one ADS stream (SotW or Delta) that asks LDS for its target
//! listeners by name, then RDS for the route configs they name, CDS for
//! the clusters the routes name and EDS for the clusters' service names,
//! ACKing every response and NACKing nothing.
//!
//! It tells the fleet when it is configured (an ACKed resource for every
//! name it asked for, every dependency asked for) and, once configured,
//! each time a route configuration's content changes (the edit) or an
//! endpoint set's content changes (an EndpointSlice change).
//!
//! Not here: checking what the resources mean.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest,
    DiscoveryRequest,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_xds::types::{self, unany};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::config::PORT;

/// The type URLs in the order a gRPC client walks them.
pub const TYPES: [&str; 4] = [
    types::LISTENER,
    types::ROUTE,
    types::CLUSTER,
    types::ENDPOINT,
];

/// What a client tells the fleet.
#[derive(Debug, Clone)]
pub enum Event {
    /// Everything it asked for has arrived and been ACKed.
    Configured {
        /// Client index.
        client: usize,
        /// When.
        at: Instant,
        /// How many resources of each type (LDS, RDS, CDS, EDS) it holds.
        resources: [usize; 4],
    },
    /// After being configured, a route configuration changed and was ACKed.
    RouteChanged {
        /// Client index.
        client: usize,
        /// When.
        at: Instant,
    },
    /// After being configured, an endpoint set (EDS `ClusterLoadAssignment`)
    /// changed and was ACKed.
    EndpointsChanged {
        /// Client index.
        client: usize,
        /// When.
        at: Instant,
    },
    /// The stream ended or failed; the client reconnects after a backoff.
    Ended {
        /// Client index.
        client: usize,
        /// Why.
        why: String,
    },
}

/// Client `c`'s pod IP (its `INSTANCE_IPS`).
pub fn ip(c: usize) -> String {
    format!("10.200.{}.{}", (c >> 8) & 0xff, c & 0xff)
}

/// The server listener client `c` asks for when its app serves the gRPC
/// port, as a proxyless gRPC server bound to its pod IP does.
pub fn inbound_listener(c: usize) -> String {
    format!("xds.istio.io/grpc/lds/inbound/{}:{}", ip(c), PORT)
}

/// Client `c`'s node in `namespace`, as a proxyless gRPC client in Istio
/// sends it: id `sidecar~IP~POD.NS~NS.svc.cluster.local`, `GENERATOR:
/// grpc`, namespace, labels, service account, cluster, Istio version.
/// Identities are shared by groups of `apps` clients.
pub fn node(c: usize, apps: usize, namespace: &str) -> Node {
    let app = format!("client-{}", c % apps.max(1));
    let ip = ip(c);
    let md = json!({
        "GENERATOR": "grpc",
        "NAMESPACE": namespace,
        "LABELS": {"app": app, "version": "v1"},
        "SERVICE_ACCOUNT": app,
        "WORKLOAD_NAME": app,
        "CLUSTER_ID": "Kubernetes",
        "ISTIO_VERSION": "1.28.0",
        "INSTANCE_IPS": ip,
    });
    let metadata = md.as_object().map(types::json_to_struct);
    Node {
        id: format!("sidecar~{ip}~{app}-{c}.{namespace}~{namespace}.svc.cluster.local"),
        cluster: app,
        metadata,
        user_agent_name: "grpc-go".into(),
        user_agent_version_type: Some(
            envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                "1.70.0".into(),
            ),
        ),
        client_features: vec![
            "envoy.lb.does_not_support_overprovisioning".into(),
            "xds.config.resource-in-sotw".into(),
        ],
        ..Default::default()
    }
}

/// One type's subscription and what arrived for it.
#[derive(Default)]
struct Watch {
    /// Names asked for.
    names: BTreeSet<String>,
    /// Whether a request for this type was ever sent.
    started: bool,
    /// Last version and nonce (SotW).
    version: String,
    nonce: String,
    /// Per received resource: a hash of its bytes and the names of the
    /// next type's resources it needs.
    got: HashMap<String, (u64, Vec<String>)>,
}

/// The name of a resource and what it depends on, for type index `t`.
fn decode(t: usize, any: &Any) -> Option<(String, Vec<String>)> {
    match t {
        0 => {
            let l: Listener = unany(any)?;
            let hcm: Option<HttpConnectionManager> = l
                .api_listener
                .as_ref()
                .and_then(|a| a.api_listener.as_ref())
                .and_then(unany);
            let deps = match hcm.and_then(|h| h.route_specifier) {
                Some(RouteSpecifier::Rds(rds)) => vec![rds.route_config_name],
                _ => Vec::new(),
            };
            Some((l.name, deps))
        }
        1 => {
            let r: RouteConfiguration = unany(any)?;
            let mut deps = Vec::new();
            for vh in &r.virtual_hosts {
                for route in &vh.routes {
                    let Some(Action::Route(ra)) = &route.action else {
                        continue;
                    };
                    match &ra.cluster_specifier {
                        Some(ClusterSpecifier::Cluster(c)) => deps.push(c.clone()),
                        Some(ClusterSpecifier::WeightedClusters(w)) => {
                            deps.extend(w.clusters.iter().map(|c| c.name.clone()))
                        }
                        _ => {}
                    }
                }
            }
            Some((r.name, deps))
        }
        2 => {
            let c: Cluster = unany(any)?;
            let eds = matches!(
                c.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
            );
            let deps = if eds {
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| c.name.clone());
                vec![service]
            } else {
                Vec::new()
            };
            Some((c.name, deps))
        }
        _ => {
            let c: ClusterLoadAssignment = unany(any)?;
            Some((c.cluster_name, Vec::new()))
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The client's view of all four types.
struct State {
    watches: [Watch; 4],
    configured: bool,
}

impl State {
    fn new(listeners: &[String]) -> Self {
        let mut watches: [Watch; 4] = Default::default();
        watches[0].names = listeners.iter().cloned().collect();
        Self {
            watches,
            configured: false,
        }
    }

    /// The names type `t + 1` should ask for, from what arrived of `t`.
    fn wanted(&self, t: usize) -> BTreeSet<String> {
        let w = &self.watches[t];
        w.names
            .iter()
            .filter_map(|n| w.got.get(n))
            .flat_map(|(_, deps)| deps.iter().cloned())
            .collect()
    }

    /// Takes resources of type `t` (`full`: a SotW response of a type
    /// whose responses hold every subscribed resource). Returns whether a
    /// resource held before changed its content.
    fn take(&mut self, t: usize, resources: &[Any], removed: &[String], full: bool) -> bool {
        let w = &mut self.watches[t];
        if full {
            w.got.clear();
        }
        for r in removed {
            w.got.remove(r);
        }
        let mut changed = false;
        for any in resources {
            if let Some((name, deps)) = decode(t, any) {
                let h = hash(&any.value);
                let old = w.got.insert(name, (h, deps));
                if old.is_some_and(|(o, _)| o != h) {
                    changed = true;
                }
            }
        }
        changed
    }

    /// The types whose subscription must change, with their new names.
    fn resubscribe(&mut self) -> Vec<(usize, BTreeSet<String>, BTreeSet<String>)> {
        let mut out = Vec::new();
        for t in 0..3 {
            let want = self.wanted(t);
            let next = &mut self.watches[t + 1];
            if want != next.names || (!next.started && !want.is_empty()) {
                let added = want.difference(&next.names).cloned().collect();
                let removed = next.names.difference(&want).cloned().collect();
                next.names = want;
                next.started = true;
                out.push((t + 1, added, removed));
            }
        }
        out
    }

    fn is_configured(&self) -> bool {
        !self.watches[0].names.is_empty()
            && self
                .watches
                .iter()
                .all(|w| w.names.iter().all(|n| w.got.contains_key(n)))
            && (0..3).all(|t| self.wanted(t) == self.watches[t + 1].names)
    }
}

fn type_index(url: &str) -> Option<usize> {
    TYPES.iter().position(|t| *t == url)
}

/// gRPC's default reconnect backoff: 1 s, times 1.6 per failure, at most
/// 120 s, with +-20% jitter.
fn backoff(attempt: u32, index: usize) -> Duration {
    let base = (1.6f64).powi(attempt.min(20) as i32).min(120.0);
    let mut h = DefaultHasher::new();
    (index, attempt).hash(&mut h);
    let jitter = 0.8 + 0.4 * (h.finish() % 1000) as f64 / 1000.0;
    Duration::from_secs_f64(base * jitter)
}

/// Runs client `index` with `node` on `channel`, reconnecting like a gRPC
/// client when the stream ends, until the task is aborted; reports to
/// `events`.
pub async fn run(
    index: usize,
    node: Node,
    listeners: Vec<String>,
    channel: Channel,
    delta: bool,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut state = State::new(&listeners);
    let mut attempt = 0;
    loop {
        let (why, got_any) = if delta {
            run_delta(index, &node, &mut state, channel.clone(), &events).await
        } else {
            run_sotw(index, &node, &mut state, channel.clone(), &events).await
        };
        if events.send(Event::Ended { client: index, why }).is_err() {
            return;
        }
        if got_any {
            attempt = 0;
        }
        tokio::time::sleep(backoff(attempt, index)).await;
        attempt += 1;
    }
}

/// Tells the fleet what a response of type `t` did: a changed route
/// configuration or endpoint set (once configured), or the client now
/// configured.
fn after_response(
    index: usize,
    state: &mut State,
    t: usize,
    changed: bool,
    events: &mpsc::UnboundedSender<Event>,
) {
    if state.configured && changed {
        let at = Instant::now();
        let event = match t {
            1 => Some(Event::RouteChanged { client: index, at }),
            3 => Some(Event::EndpointsChanged { client: index, at }),
            _ => None,
        };
        if let Some(e) = event {
            let _ = events.send(e);
        }
    }
    if !state.configured && state.is_configured() {
        state.configured = true;
        let _ = events.send(Event::Configured {
            client: index,
            at: Instant::now(),
            resources: [0, 1, 2, 3].map(|t| state.watches[t].got.len()),
        });
    }
}

/// The subscriptions to (re)send at the start of a stream: every type
/// asked for so far, with its names.
fn initial_names(state: &mut State) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (t, w) in state.watches.iter_mut().enumerate() {
        w.version.clear();
        w.nonce.clear();
        if t == 0 || w.started {
            w.started = true;
            out.push((t, w.names.iter().cloned().collect()));
        }
    }
    out
}

/// One SotW stream; returns why it ended and whether any response came.
async fn run_sotw(
    index: usize,
    node: &Node,
    state: &mut State,
    channel: Channel,
    events: &mpsc::UnboundedSender<Event>,
) -> (String, bool) {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    for (i, (t, names)) in initial_names(state).into_iter().enumerate() {
        let req = DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: TYPES[t].into(),
            resource_names: names,
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            return ("request channel closed".into(), false);
        }
    }
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = match client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return (format!("opening the SotW stream: {e}"), false),
    };
    let mut got_any = false;
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return ("the server closed the stream".into(), got_any),
            Err(e) => return (format!("stream error: {e}"), got_any),
        };
        got_any = true;
        let Some(t) = type_index(&resp.type_url) else {
            continue;
        };
        // LDS and CDS responses hold every subscribed resource.
        let full = t == 0 || t == 2;
        let changed = state.take(t, &resp.resources, &[], full);
        let w = &mut state.watches[t];
        w.version = resp.version_info.clone();
        w.nonce = resp.nonce.clone();
        let ack = DiscoveryRequest {
            version_info: w.version.clone(),
            resource_names: w.names.iter().cloned().collect(),
            type_url: resp.type_url.clone(),
            response_nonce: w.nonce.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return ("request channel closed".into(), got_any);
        }
        for (t, _, _) in state.resubscribe() {
            let w = &state.watches[t];
            let req = DiscoveryRequest {
                version_info: w.version.clone(),
                resource_names: w.names.iter().cloned().collect(),
                type_url: TYPES[t].into(),
                response_nonce: w.nonce.clone(),
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                return ("request channel closed".into(), got_any);
            }
        }
        after_response(index, state, t, changed, events);
    }
}

/// One Delta stream; returns why it ended and whether any response came.
async fn run_delta(
    index: usize,
    node: &Node,
    state: &mut State,
    channel: Channel,
    events: &mpsc::UnboundedSender<Event>,
) -> (String, bool) {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    for (i, (t, names)) in initial_names(state).into_iter().enumerate() {
        let req = DeltaDiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: TYPES[t].into(),
            resource_names_subscribe: names,
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            return ("request channel closed".into(), false);
        }
    }
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = match client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return (format!("opening the Delta stream: {e}"), false),
    };
    let mut got_any = false;
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return ("the server closed the stream".into(), got_any),
            Err(e) => return (format!("stream error: {e}"), got_any),
        };
        got_any = true;
        let Some(t) = type_index(&resp.type_url) else {
            continue;
        };
        let resources: Vec<Any> = resp
            .resources
            .iter()
            .filter_map(|r| r.resource.clone())
            .collect();
        let changed = state.take(t, &resources, &resp.removed_resources, false);
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return ("request channel closed".into(), got_any);
        }
        for (t, added, removed) in state.resubscribe() {
            let req = DeltaDiscoveryRequest {
                type_url: TYPES[t].into(),
                resource_names_subscribe: added.into_iter().collect(),
                resource_names_unsubscribe: removed.into_iter().collect(),
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                return ("request channel closed".into(), got_any);
            }
        }
        after_response(index, state, t, changed, events);
    }
}
