//! Compiling and encoding for one client identity: namespace, labels,
//! service account and the IPs its servers listen on. Nodes with the same
//! identity get the same resources, so meshd compiles once per identity
//! and shares the snapshot.
//!
//! An identity's resources come in two parts: the outbound side (client
//! listeners, routes, clusters, endpoints), shared with every identity
//! that sees the same services ([`OutboundCache`]), and the identity's own
//! listeners: its server listeners and, for our SDK's nodes, the listener
//! that carries its compiled Telemetry API policy
//! (`mesh_xds::telemetry_policy`, which says why it travels that way). The
//! policy is per identity (a Telemetry selector picks workloads by labels),
//! so it is never part of the shared outbound side; it is encoded from the
//! policy alone, so an edit that leaves the policy as it was leaves the
//! resource's bytes and version as they were.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};

use mesh_core::sync::LockExt;

use mesh_core::authz::{self, Workload};
use mesh_core::compile::Compiler;
use mesh_core::config::Resource;
use mesh_core::model::{cluster_name, Client, Cluster, MeshSettings, Model, OutboundService};
use mesh_xds::encode::{encode, inbound_listener, EncodeOptions};
use mesh_xds::node::NodeInfo;
use mesh_xds::pb::google::protobuf::Any;
use mesh_xds::server::{same_resource, Content, Snapshot};
use mesh_xds::telemetry_policy::telemetry_listener;
use mesh_xds::types::{self, any};

/// What decides a node's resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    /// Namespace (`default` when the node sends none).
    pub namespace: String,
    /// Labels, sorted.
    pub labels: Vec<(String, String)>,
    /// Service account.
    pub service_account: Option<String>,
    /// `INSTANCE_IPS`, which name its inbound listeners.
    pub instance_ips: Vec<String>,
    /// A stock proxyless gRPC client: route kinds gRPC rejects are left
    /// out of its RouteConfigurations (see [`NodeInfo::proxyless_grpc`]).
    pub proxyless_grpc: bool,
    /// Which stock gRPC server it is (see [`NodeInfo::stock_server`]).
    pub stock_server: mesh_core::authz::StockServer,
    /// Our SDK (see [`NodeInfo::mesh_sdk`]): it also gets the telemetry
    /// policy's listener, which Envoy and stock gRPC clients must not.
    pub mesh_sdk: bool,
}

impl ClientKey {
    /// The key of a node.
    pub fn of(info: &NodeInfo) -> Self {
        let client = info.client();
        Self {
            namespace: client.namespace,
            labels: client.labels.into_iter().collect(),
            service_account: client.service_account,
            instance_ips: info.instance_ips.clone(),
            proxyless_grpc: info.proxyless_grpc,
            stock_server: info.stock_server,
            mesh_sdk: info.mesh_sdk,
        }
    }

    /// The key without `INSTANCE_IPS`: what decides the resources of a
    /// workload that serves no port (the IPs only name inbound listeners
    /// and select static endpoints it serves), so all pods of such an app
    /// share one compile and one copy of the resources.
    pub fn identity(&self) -> ClientKey {
        ClientKey {
            instance_ips: Vec::new(),
            ..self.clone()
        }
    }

    /// How this key's resources are made (see [`Sharing`]).
    pub fn sharing(&self, compiler: &Compiler) -> Sharing {
        if self.instance_ips.is_empty() {
            return Sharing::Own;
        }
        let c = self.client();
        let ports = |addresses: &[String]| -> BTreeSet<u16> {
            compiler
                .registry()
                .served_ports(&c.namespace, &c.labels, addresses)
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        };
        let at_ips = ports(&c.addresses);
        if at_ips.is_empty() {
            Sharing::Identity
        } else if at_ips == ports(&[]) {
            Sharing::Overlay
        } else {
            // It serves ports because a static endpoint has its IP: its
            // inbound side is its own.
            Sharing::Own
        }
    }

    /// The client to compile for.
    pub fn client(&self) -> Client {
        let mut c = Client::new(
            self.namespace.clone(),
            self.labels.iter().cloned().collect(),
        );
        c.service_account = self.service_account.clone();
        c.addresses = self.instance_ips.clone();
        c
    }
}

/// The addresses every identity's server listeners are named by: the
/// wildcards and loopback (where servers in examples and local runs bind).
const SHARED_ADDRESSES: [&str; 4] = ["0.0.0.0", "::", "127.0.0.1", "::1"];

/// How a node's resources relate to its identity's (the key without
/// `INSTANCE_IPS`, [`ClientKey::identity`]). Every pod has its own IPs;
/// compiling per pod would cost a compile and a full copy of the
/// resources each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// It serves no port: exactly its identity's resources.
    Identity,
    /// It serves its identity's ports: its identity's resources plus
    /// server listeners named by its own IPs ([`overlay`]).
    Overlay,
    /// Compiled for itself (no IPs, or ports served because a static
    /// endpoint has its address).
    Own,
}

/// The server listeners a pod of `compiled`'s identity asks for by its own
/// IPs (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`), with the identity's
/// own listeners (server listeners on the shared addresses, the telemetry
/// policy's for an SDK node): a few listeners per pod on top of the shared
/// outbound side, instead of a copy of everything.
pub fn overlay(compiled: &Compiled, key: &ClientKey) -> Option<Arc<Content>> {
    let model = &compiled.inbound_model;
    let own: Vec<(String, Any)> = key
        .instance_ips
        .iter()
        .filter(|ip| !SHARED_ADDRESSES.contains(&ip.as_str()))
        .flat_map(|ip| {
            model.inbound.ports.keys().map(move |port| {
                let l = inbound_listener(model, ip, *port, key.stock_server);
                (l.name.clone(), any(&l))
            })
        })
        .collect();
    if own.is_empty() {
        return compiled.inbound_content.clone();
    }
    let mut s = Snapshot::new();
    let shared = compiled
        .inbound_content
        .iter()
        .flat_map(|c| c.snapshot.resources(types::LISTENER).cloned())
        .flatten();
    s.set_type(types::LISTENER, shared.chain(own));
    Some(Arc::new(Content::new(s)))
}

/// One identity's compilation: its outbound side (shared with every
/// identity whose outbound side is equal) and its inbound side.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The model's inbound side (no outbound services or clusters), to
    /// encode server listeners from.
    inbound_model: Model,
    inbound: serde_json::Value,
    policies: Vec<Resource>,
    /// The outbound listeners, routes, clusters and endpoints.
    pub outbound: Arc<Outbound>,
    /// The identity's own listeners: the server listeners on the shared
    /// addresses, when it serves ports, and the telemetry policy's
    /// listener, for SDK nodes. `None` when it has neither.
    pub inbound_content: Option<Arc<Content>>,
}

impl Compiled {
    /// Every resource of the identity as one snapshot (for tests and
    /// debugging; nodes hold the shared parts).
    pub fn snapshot(&self) -> Snapshot {
        let mut s = (*self.outbound.content.snapshot).clone();
        for (name, l) in self
            .inbound_content
            .iter()
            .flat_map(|c| c.snapshot.resources(types::LISTENER).cloned())
            .flatten()
        {
            s.insert(types::LISTENER, name, l);
        }
        s
    }
}

/// An outbound side: the model's outbound services and clusters with the
/// context their encoding reads (the client's namespace names the short
/// host names of route domains), and what they encode to. Most identities
/// of a namespace see the same services the same way, so they share one:
/// one encoding and one copy of a thousand services' resources.
#[derive(Debug)]
pub struct Outbound {
    namespace: String,
    mesh: MeshSettings,
    proxyless_grpc: bool,
    outbound: BTreeMap<String, OutboundService>,
    clusters: BTreeMap<String, Cluster>,
    /// The encoded resources.
    pub content: Arc<Content>,
}

impl Outbound {
    /// Encoded in the same context as `model` would be: its elements
    /// encode to the same bytes.
    fn same_context(&self, model: &Model, proxyless_grpc: bool) -> bool {
        self.proxyless_grpc == proxyless_grpc
            && self.namespace == model.client.namespace
            && self.mesh == model.mesh
    }

    fn same(&self, model: &Model, proxyless_grpc: bool) -> bool {
        // Routes first: an edit most often changes a route, and a
        // mismatch there ends the comparison early.
        self.same_context(model, proxyless_grpc)
            && self.outbound.len() == model.outbound.len()
            && self
                .outbound
                .iter()
                .zip(&model.outbound)
                .all(|((ka, a), (kb, b))| ka == kb && same_outbound(a, b))
            && self.clusters == model.clusters
    }
}

/// The outbound sides in use, so an identity whose outbound side equals
/// one already encoded takes it instead of encoding its own. Entries live
/// as long as a compilation holds them.
#[derive(Debug, Default)]
pub struct OutboundCache(Mutex<Vec<Weak<Outbound>>>);

impl OutboundCache {
    fn find(&self, model: &Model, proxyless_grpc: bool) -> Option<Arc<Outbound>> {
        let live: Vec<Arc<Outbound>> = self.0.locked().iter().filter_map(Weak::upgrade).collect();
        // Compared off the lock: compiles of other identities run at once.
        // Newest first: after a change, the side another identity just
        // encoded is the likely match, not the one the change replaced.
        live.into_iter()
            .rev()
            .find(|o| o.same(model, proxyless_grpc))
    }

    /// A live outbound side in the same context as `model`, to encode it
    /// incrementally from.
    fn base(&self, model: &Model, proxyless_grpc: bool) -> Option<Arc<Outbound>> {
        self.0
            .locked()
            .iter()
            .filter_map(Weak::upgrade)
            .find(|o| o.same_context(model, proxyless_grpc))
    }

    fn insert(&self, o: &Arc<Outbound>) {
        let mut v = self.0.locked();
        v.retain(|w| w.strong_count() > 0);
        if !v.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(o))) {
            v.push(Arc::downgrade(o));
        }
    }

    /// How many outbound sides are in use.
    pub fn len(&self) -> usize {
        self.0
            .locked()
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The addresses a server of this identity may name in its listener
/// request: the wildcards, loopback (where servers in examples and local
/// runs bind) and the node's `INSTANCE_IPS`.
fn inbound_addresses(model: &Model, key: &ClientKey) -> Vec<(String, u16)> {
    let ips: BTreeSet<&str> = SHARED_ADDRESSES
        .into_iter()
        .chain(key.instance_ips.iter().map(String::as_str))
        .collect();
    model
        .inbound
        .ports
        .keys()
        .flat_map(|port| ips.iter().map(move |ip| (ip.to_string(), *port)))
        .collect()
}

fn same_outbound(a: &OutboundService, b: &OutboundService) -> bool {
    a.host == b.host
        && a.port == b.port
        && a.protocol == b.protocol
        && a.mesh_external == b.mesh_external
        && *a.routes == *b.routes
}

/// Compiles and encodes the resources of one identity.
///
/// Server listeners: a gRPC server asks for
/// `xds.istio.io/grpc/lds/inbound/<ip>:<port>` with the address it bound,
/// so each inbound port gets a listener on the wildcard addresses and on
/// every instance IP of the key.
///
/// The outbound side is taken from `prev` (the identity's previous
/// compilation) or from `cache` (another identity's) when equal; otherwise
/// it is encoded, from `prev` incrementally when it can be: only the
/// outbound services and clusters whose model changed are encoded again
/// (an element's encoding depends only on itself, the client's namespace
/// and the mesh settings), everything else keeps its previous bytes.
pub fn compile(
    compiler: &Compiler,
    key: &ClientKey,
    prev: Option<&Compiled>,
    cache: &OutboundCache,
) -> Compiled {
    let client = key.client();
    let mut model = compiler.compile(&client);
    let workload = Workload::new(key.namespace.clone(), client.labels.clone());
    let policies: Vec<Resource> =
        authz::select(compiler.resources(), &model.mesh.root_namespace, &workload)
            .into_iter()
            .cloned()
            .collect();
    let inbound = serde_json::to_value(&model.inbound).unwrap_or(serde_json::Value::Null);

    let outbound = match prev.map(|p| &p.outbound) {
        Some(o) if o.same(&model, key.proxyless_grpc) => o.clone(),
        _ => match cache.find(&model, key.proxyless_grpc) {
            Some(o) => o,
            None => {
                // The base to encode from: the identity's previous side,
                // else another identity's in the same context (a new
                // identity then encodes only where it differs, with the
                // same bytes for the rest).
                let base = prev
                    .map(|p| p.outbound.clone())
                    .filter(|o| o.same_context(&model, key.proxyless_grpc))
                    .or_else(|| cache.base(&model, key.proxyless_grpc));
                let o = Arc::new(encode_outbound(
                    &model,
                    key.proxyless_grpc,
                    base.as_deref().or(prev.map(|p| p.outbound.as_ref())),
                ));
                cache.insert(&o);
                o
            }
        },
    };

    let same_inbound = prev.filter(|p| {
        p.inbound_model.client == model.client
            && p.inbound_model.mesh == model.mesh
            && p.inbound == inbound
            && p.policies == policies
            && p.inbound_model.telemetry == model.telemetry
    });
    let inbound_content = match same_inbound {
        Some(p) => p.inbound_content.clone(),
        None => {
            if prev.is_none_or(|p| p.policies != policies) {
                log_lowering(key, &model);
            }
            let telemetry = key.mesh_sdk.then(|| {
                let l = telemetry_listener(&model.telemetry);
                (l.name.clone(), any(&l))
            });
            let listeners: Vec<(String, Any)> = inbound_addresses(&model, key)
                .into_iter()
                .map(|(ip, port)| {
                    let l = inbound_listener(&model, &ip, port, key.stock_server);
                    (l.name.clone(), any(&l))
                })
                .chain(telemetry)
                .collect();
            let old = prev.and_then(|p| p.inbound_content.as_ref());
            (!listeners.is_empty()).then(|| {
                let mut s = Snapshot::new();
                s.set_type(types::LISTENER, listeners);
                let s = match old {
                    Some(o) => stabilize(&o.snapshot, s).0,
                    None => s,
                };
                Arc::new(Content::update(s, old.map(Arc::as_ref)))
            })
        }
    };
    model.outbound.clear();
    model.clusters.clear();
    Compiled {
        inbound_model: model,
        inbound,
        policies,
        outbound,
        inbound_content,
    }
}

/// Encodes the outbound side of `model`: from `prev`'s when the context
/// is the same (only what changed), from scratch otherwise.
fn encode_outbound(model: &Model, proxyless_grpc: bool, prev: Option<&Outbound>) -> Outbound {
    let same_context = prev.filter(|p| p.same_context(model, proxyless_grpc));
    let snapshot = match same_context {
        Some(p) => incremental(p, model),
        None => {
            let mut outbound_only = model.clone();
            outbound_only.inbound.ports.clear();
            let fresh = Snapshot::from_resources(&encode(
                &outbound_only,
                &EncodeOptions {
                    proxyless_grpc,
                    ..EncodeOptions::default()
                },
            ));
            match prev {
                Some(p) => match stabilize(&p.content.snapshot, fresh) {
                    (_, true) => p.content.snapshot.clone(),
                    (s, false) => Arc::new(s),
                },
                None => Arc::new(fresh),
            }
        }
    };
    let content = match prev {
        Some(p) if Arc::ptr_eq(&p.content.snapshot, &snapshot) => p.content.clone(),
        _ => Arc::new(Content::update(snapshot, prev.map(|p| p.content.as_ref()))),
    };
    Outbound {
        namespace: model.client.namespace.clone(),
        mesh: model.mesh.clone(),
        proxyless_grpc,
        outbound: model.outbound.clone(),
        clusters: model.clusters.clone(),
        content,
    }
}

/// Says which AuthorizationPolicy rules a stock gRPC server cannot
/// evaluate exactly and what the RBAC filters sent to it do instead (an
/// ALLOW rule dropped, a DENY rule widened): once per identity and policy
/// change, so a stock server that denies more than the SDK is explained.
fn log_lowering(key: &ClientKey, model: &Model) {
    let ports: BTreeSet<bool> = model.inbound.ports.values().map(|p| p.is_tcp()).collect();
    let mut seen = BTreeSet::new();
    for tcp in ports {
        let protocol = if tcp {
            authz::Protocol::Tcp
        } else {
            authz::Protocol::Http
        };
        for note in model
            .inbound
            .authz
            .lower_for(protocol, key.stock_server)
            .notes
        {
            let line = note.to_string();
            if !seen.insert(line.clone()) {
                continue;
            }
            if note.effect == authz::Effect::NotSent {
                tracing::info!(namespace = %key.namespace, labels = ?key.labels, "{line}");
            } else {
                tracing::warn!(namespace = %key.namespace, labels = ?key.labels, "{line}");
            }
        }
    }
}

/// The previous snapshot with the changed outbound services and clusters
/// re-encoded, removed ones dropped; the same `Arc` when nothing changed.
fn incremental(prev: &Outbound, model: &Model) -> Arc<Snapshot> {
    let old = prev;
    let changed_clusters: BTreeMap<_, _> = model
        .clusters
        .iter()
        .filter(|(k, v)| old.clusters.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let stale_clusters: BTreeMap<_, _> = old
        .clusters
        .iter()
        .filter(|(k, v)| model.clusters.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A route's encoding also reads its destination clusters (their
    // consistent-hash settings become its hash policies).
    let touches_changed_cluster = |svc: &OutboundService| {
        svc.routes.routes.iter().any(|r| {
            r.destinations().iter().any(|d| {
                let name = cluster_name(&d.host, d.port.unwrap_or(svc.port), d.subset.as_deref());
                changed_clusters.contains_key(&name) || stale_clusters.contains_key(&name)
            })
        })
    };
    let changed_out: BTreeMap<String, OutboundService> = model
        .outbound
        .iter()
        .filter(|(k, v)| {
            old.outbound.get(*k).is_none_or(|o| !same_outbound(o, v)) || touches_changed_cluster(v)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let stale_out: BTreeMap<String, OutboundService> = old
        .outbound
        .iter()
        .filter(|(k, v)| model.outbound.get(*k).is_none_or(|n| !same_outbound(n, v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if changed_out.is_empty()
        && stale_out.is_empty()
        && changed_clusters.is_empty()
        && stale_clusters.is_empty()
    {
        return prev.content.snapshot.clone();
    }
    // Partial models: no inbound ports, so no server listeners (the
    // inbound side is encoded apart).
    let part = |outbound, clusters| {
        let mut inbound = model.inbound.clone();
        inbound.ports.clear();
        Model {
            client: model.client.clone(),
            mesh: model.mesh.clone(),
            outbound,
            clusters,
            inbound,
            telemetry: model.telemetry.clone(),
            gateway: model.gateway.clone(),
        }
    };
    let opts = EncodeOptions {
        proxyless_grpc: prev.proxyless_grpc,
        ..EncodeOptions::default()
    };
    let remove = Snapshot::from_resources(&encode(&part(stale_out, stale_clusters), &opts));
    // Routes are encoded with every cluster at hand (for their hash
    // policies); only the changed clusters are taken from the second.
    let mut add =
        Snapshot::from_resources(&encode(&part(changed_out, model.clusters.clone()), &opts));
    let clusters =
        Snapshot::from_resources(&encode(&part(BTreeMap::new(), changed_clusters), &opts));
    for t in [types::CLUSTER, types::ENDPOINT] {
        add.set_type(t, clusters.resources(t).cloned().unwrap_or_default());
    }
    let mut out = Snapshot::new();
    for type_url in prev.content.snapshot.type_urls() {
        let mut res = prev
            .content
            .snapshot
            .resources(type_url)
            .cloned()
            .unwrap_or_default();
        for name in remove
            .resources(type_url)
            .into_iter()
            .flat_map(|r| r.keys())
        {
            res.remove(name);
        }
        out.set_type(type_url, res);
    }
    for type_url in add.type_urls() {
        for (name, a) in add.resources(type_url).into_iter().flatten() {
            // Keep the previous bytes when the new encoding means the same.
            let keep = prev
                .content
                .snapshot
                .resources(type_url)
                .and_then(|r| r.get(name))
                .filter(|o| same_resource(type_url, o, a));
            out.insert(type_url, name.clone(), keep.unwrap_or(a).clone());
        }
    }
    Arc::new(out)
}

/// Compiles and encodes one identity from scratch.
pub fn snapshot(compiler: &Compiler, key: &ClientKey) -> Snapshot {
    compile(compiler, key, None, &OutboundCache::default()).snapshot()
}

/// `next` with every resource that means the same as in `prev` replaced
/// by `prev`'s bytes, and whether nothing changed at all.
///
/// Done once per client identity, this keeps the per-node comparison in
/// the snapshot cache a byte compare for unchanged resources, instead of
/// decoding them again for every node of that identity; and when nothing
/// changed, the nodes are not touched at all.
pub fn stabilize(prev: &Snapshot, next: Snapshot) -> (Snapshot, bool) {
    let mut out = Snapshot::new();
    let mut unchanged = prev.type_urls().count() == next.type_urls().count();
    for type_url in next.type_urls() {
        let fresh = next.resources(type_url).cloned().unwrap_or_default();
        let old = prev.resources(type_url);
        unchanged &= old.is_some_and(|o| o.len() == fresh.len());
        let merged: Vec<(String, Any)> = fresh
            .into_iter()
            .map(|(name, res)| match old.and_then(|o| o.get(&name)) {
                Some(o) if same_resource(type_url, o, &res) => (name, o.clone()),
                _ => {
                    unchanged = false;
                    (name, res)
                }
            })
            .collect();
        out.set_type(type_url, merged);
    }
    (out, unchanged)
}

#[cfg(test)]
mod tests_support {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::config::load::load_str;
    use mesh_core::config::MeshConfig;

    pub fn compiler(timeout: &str) -> Compiler {
        compiler_with(timeout, "")
    }

    pub fn compiler_with(timeout: &str, extra: &str) -> Compiler {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: demo}}\nspec:\n  selector: {{app: a}}\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: demo}}\nspec:\n  selector: {{app: b}}\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a, namespace: demo}}\nspec:\n  hosts: [a]\n  http:\n  - timeout: {timeout}\n    route: [{{destination: {{host: a}}}}]\n{extra}"
        );
        let res = load_str(&yaml, "t.yaml").into_result().unwrap();
        Compiler::new(res, MeshConfig::default())
    }

    /// Compiles with a cache of its own.
    pub fn compile1(c: &Compiler, k: &ClientKey, prev: Option<&Compiled>) -> Compiled {
        compile(c, k, prev, &OutboundCache::default())
    }

    pub fn key() -> ClientKey {
        ClientKey {
            namespace: "demo".into(),
            labels: vec![("app".into(), "client".into())],
            service_account: None,
            instance_ips: vec![],
            proxyless_grpc: false,
            stock_server: Default::default(),
            mesh_sdk: false,
        }
    }
}

#[cfg(test)]
mod telemetry_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::tests_support::*;
    use super::*;
    use mesh_xds::types;

    #[test]
    fn stabilize_keeps_old_bytes_for_unchanged_resources() {
        let first = snapshot(&compiler("5s"), &key());
        let again = snapshot(&compiler("5s"), &key());
        let (_, unchanged) = stabilize(&first, again);
        assert!(unchanged);

        let changed = snapshot(&compiler("7s"), &key());
        let (merged, unchanged) = stabilize(&first, changed.clone());
        assert!(!unchanged);
        let routes = merged.resources(types::ROUTE).unwrap();
        let a = "outbound|80||a.demo.svc.cluster.local";
        let b = "outbound|80||b.demo.svc.cluster.local";
        // The changed route has the new bytes, the untouched one the old.
        assert_eq!(routes[a], changed.resources(types::ROUTE).unwrap()[a]);
        assert_eq!(routes[b], first.resources(types::ROUTE).unwrap()[b]);
        assert_eq!(
            merged.resources(types::CLUSTER),
            first.resources(types::CLUSTER)
        );
    }
}

#[cfg(test)]
mod incremental_tests {
    #![allow(clippy::unwrap_used)]
    use super::tests_support::*;
    use super::*;
    use mesh_xds::types;

    #[test]
    fn a_route_is_encoded_again_when_its_clusters_hash_policy_changes() {
        let dr = |header: &str| {
            format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: a, namespace: demo}}\nspec:\n  host: a\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {{httpHeaderName: {header}}}\n")
        };
        let k = key();
        let first = compile1(&compiler_with("5s", &dr("x-user")), &k, None);
        let c2 = compiler_with("5s", &dr("x-session"));
        let inc = compile1(&c2, &k, Some(&first));
        same(&inc.snapshot(), &compile1(&c2, &k, None).snapshot());
        assert_ne!(
            inc.snapshot().resources(types::ROUTE),
            first.snapshot().resources(types::ROUTE),
            "the route's hash policy follows the DestinationRule"
        );
    }

    #[test]
    fn identities_that_see_the_same_share_one_outbound_side() {
        let source_rule = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: demo}\nspec:\n  hosts: [b]\n  http:\n  - match: [{sourceLabels: {app: canary}}]\n    timeout: 1s\n    route: [{destination: {host: b}}]\n  - route: [{destination: {host: b}}]\n";
        let c = compiler_with("5s", source_rule);
        let cache = OutboundCache::default();
        let app = |a: &str| ClientKey {
            labels: vec![("app".into(), a.into())],
            ..key()
        };
        let x = compile(&c, &app("x"), None, &cache);
        let y = compile(&c, &app("y"), None, &cache);
        assert!(
            Arc::ptr_eq(&x.outbound, &y.outbound),
            "x and y see the same"
        );
        assert_eq!(cache.len(), 1);
        // A rule that matches one app's labels gives it its own.
        let canary = compile(&c, &app("canary"), None, &cache);
        assert!(!Arc::ptr_eq(&x.outbound, &canary.outbound));
        // It was encoded from x's side: what it sees alike has the very
        // same bytes (a fresh encoding would order protobuf maps anew).
        let (sx, sc) = (
            &x.outbound.content.snapshot,
            &canary.outbound.content.snapshot,
        );
        for t in [
            types::CLUSTER,
            types::ROUTE,
            types::LISTENER,
            types::ENDPOINT,
        ] {
            let (rx, rc) = (sx.resources(t).unwrap(), sc.resources(t).unwrap());
            for (name, a) in rx.iter().filter(|(n, _)| !n.contains("b.demo")) {
                assert_eq!(Some(a), rc.get(name), "{t} {name}");
            }
        }
        // Another namespace names short hosts differently.
        let other = compile(
            &c,
            &ClientKey {
                namespace: "other".into(),
                ..app("x")
            },
            None,
            &cache,
        );
        assert!(!Arc::ptr_eq(&x.outbound, &other.outbound));
        assert_eq!(cache.len(), 3);
        // Each still equals its own compile from scratch.
        same(&y.snapshot(), &compile1(&c, &app("y"), None).snapshot());
        drop((x, y, canary, other));
        assert!(cache.is_empty(), "nothing kept once no identity holds it");
    }

    fn same(a: &Snapshot, b: &Snapshot) {
        let ta: Vec<&str> = a.type_urls().collect();
        assert_eq!(ta, b.type_urls().collect::<Vec<_>>());
        for t in ta {
            let (ra, rb) = (a.resources(t).unwrap(), b.resources(t).unwrap());
            assert_eq!(
                ra.keys().collect::<Vec<_>>(),
                rb.keys().collect::<Vec<_>>(),
                "{t}"
            );
            for (name, x) in ra {
                assert!(same_resource(t, x, &rb[name]), "{t} {name} differs");
            }
        }
    }

    #[test]
    fn incremental_equals_a_full_encoding() {
        let svc_c = "---\napiVersion: v1\nkind: Service\nmetadata: {name: c, namespace: demo}\nspec:\n  selector: {app: c}\n  ports: [{name: grpc, port: 90, appProtocol: grpc}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: c1, namespace: demo}\nspec:\n  address: 10.0.0.3\n  labels: {app: c}\n";
        let k = key();
        let first = compile1(&compiler("5s"), &k, None);
        // A route changes and a service (with clusters and endpoints) appears.
        let c2 = compiler_with("7s", svc_c);
        let inc = compile1(&c2, &k, Some(&first));
        let full = compile1(&c2, &k, None);
        same(&inc.snapshot(), &full.snapshot());
        assert!(inc
            .snapshot()
            .resources(types::CLUSTER)
            .unwrap()
            .contains_key("outbound|90||c.demo.svc.cluster.local"));
        // And it goes away again.
        let c3 = compiler("7s");
        let inc3 = compile1(&c3, &k, Some(&inc));
        same(&inc3.snapshot(), &compile1(&c3, &k, None).snapshot());
        assert!(!inc3
            .snapshot()
            .resources(types::LISTENER)
            .unwrap()
            .keys()
            .any(|n| n.contains("c.demo")));
        // Nothing changed: the very same snapshot.
        let again = compile1(&c3, &k, Some(&inc3));
        assert!(Arc::ptr_eq(&again.outbound, &inc3.outbound));
    }
}

#[cfg(test)]
mod proxyless_tests {
    #![allow(clippy::unwrap_used)]
    use super::tests_support::*;
    use super::*;
    use mesh_xds::pb::envoy::config::route::v3::RouteConfiguration;
    use mesh_xds::types::{self, unany};

    fn routes_of(snap: &Snapshot, name: &str) -> usize {
        let any = &snap.resources(types::ROUTE).unwrap()[name];
        let rc: RouteConfiguration = unany(any).unwrap();
        rc.virtual_hosts.iter().map(|v| v.routes.len()).sum()
    }

    #[test]
    fn stock_grpc_clients_get_route_kinds_they_cannot_take_as_aborts() {
        // A redirect before the default route: grpc-js-xds NACKs a whole
        // RouteConfiguration holding one, so a stock client gets it as a
        // route whose calls are aborted (not a fall-through), and our SDK
        // gets the redirect itself.
        let redirect = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: demo}\nspec:\n  hosts: [b]\n  http:\n  - match: [{uri: {exact: /old}}]\n    redirect: {uri: /new}\n  - route: [{destination: {host: b}}]\n";
        let c = compiler_with("5s", redirect);
        let name = "outbound|80||b.demo.svc.cluster.local";
        let aborts = |snap: &Snapshot| {
            let rc: RouteConfiguration =
                unany(&snap.resources(types::ROUTE).unwrap()[name]).unwrap();
            let r = &rc.virtual_hosts[0].routes[0];
            (
                matches!(
                    r.action,
                    Some(mesh_xds::pb::envoy::config::route::v3::route::Action::Redirect(_))
                ),
                r.typed_per_filter_config
                    .contains_key("envoy.filters.http.fault"),
            )
        };
        let sdk = compile1(&c, &key(), None);
        let stock = compile1(
            &c,
            &ClientKey {
                proxyless_grpc: true,
                ..key()
            },
            None,
        );
        assert_eq!(routes_of(&sdk.snapshot(), name), 2);
        assert_eq!(routes_of(&stock.snapshot(), name), 2);
        assert_eq!(aborts(&sdk.snapshot()), (true, false));
        assert_eq!(aborts(&stock.snapshot()), (false, true));
        // The incremental path keeps the choice.
        let c2 = compiler_with("6s", redirect);
        let again = compile1(
            &c2,
            &ClientKey {
                proxyless_grpc: true,
                ..key()
            },
            Some(&stock),
        );
        assert_eq!(aborts(&again.snapshot()), (false, true));
    }
}
