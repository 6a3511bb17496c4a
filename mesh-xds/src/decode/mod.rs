//! Envoy v3 -> model parts: the reverse of [`crate::encode`] for the
//! client-side resources (route configurations, clusters, load
//! assignments), so a client fed over xDS executes what a local compile
//! would give.
//!
//! Semantics come from Envoy fields; our `filter_metadata["mesh"]` only
//! restores what Envoy has no field for (VirtualService names, rule
//! indexes, DestinationRule settings gRPC ignores). Resources from another
//! control plane, without that metadata, decode from their Envoy fields.
//!
//! Server-side listeners' RBAC filters decode into mesh-core's RBAC
//! ([`listener_rbac`]), enforced by an SDK server when the listener has no
//! metadata of ours (our own listeners carry the whole compiled inbound
//! policy, see `crate::inbound_policy`). Not decoded: CORS beyond what the
//! metadata carries.

mod cluster;
mod rbac;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use mesh_core::model::{Cluster, Model, OutboundService};
use serde_json::Value;

pub use cluster::{decode_cluster, decode_endpoints, parse_cluster_name};
pub use rbac::{decode_rbac, listener_rbac};
pub use route::decode_route_configuration;

use crate::encode::{Resources, MESH_METADATA};
use crate::types::{struct_to_json, unany};

/// Why a resource could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A required field is missing.
    #[error("{resource}: missing {field}")]
    Missing {
        /// Resource name.
        resource: String,
        /// Field path.
        field: &'static str,
    },
    /// A value is not what we can execute.
    #[error("{resource}: {why}")]
    Invalid {
        /// Resource name.
        resource: String,
        /// What is wrong.
        why: String,
    },
}

impl DecodeError {
    pub(crate) fn invalid(resource: &str, why: impl Into<String>) -> Self {
        Self::Invalid {
            resource: resource.to_string(),
            why: why.into(),
        }
    }
}

/// A client-side listener: its name and the route config it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientListener {
    /// `host:port`.
    pub name: String,
    /// RDS route configuration name.
    pub route_config_name: String,
    /// Whether the fault filter is in the chain.
    pub fault_filter: bool,
}

/// Decodes a client-side `api_listener`.
pub fn decode_listener(l: &Listener) -> Result<ClientListener, DecodeError> {
    let missing = |field| DecodeError::Missing {
        resource: l.name.clone(),
        field,
    };
    let a = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .ok_or_else(|| missing("api_listener"))?;
    let hcm: HttpConnectionManager = unany(a).ok_or_else(|| {
        DecodeError::invalid(&l.name, "api_listener is not an HttpConnectionManager")
    })?;
    let route_config_name = match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => rds.route_config_name,
        Some(RouteSpecifier::RouteConfig(rc)) => rc.name,
        _ => return Err(missing("rds")),
    };
    Ok(ClientListener {
        name: l.name.clone(),
        route_config_name,
        fault_filter: hcm
            .http_filters
            .iter()
            .any(|f| f.name == crate::encode::FAULT_FILTER),
    })
}

/// The outbound services and clusters of a set of resources.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Outbound services by `host:port`.
    pub outbound: BTreeMap<String, OutboundService>,
    /// Clusters by name, with their endpoints.
    pub clusters: BTreeMap<String, Cluster>,
}

impl Decoded {
    /// Replaces a model's outbound services and clusters with these (the
    /// client, mesh settings and inbound policy stay).
    pub fn apply_to(self, model: &mut Model) {
        model.outbound = self.outbound;
        model.clusters = self.clusters;
    }
}

/// Decodes client-side listeners, their route configurations, clusters and
/// load assignments. Listeners that are not client-side (inbound ones) are
/// skipped; a listener whose route config is absent yields no service.
pub fn decode(res: &Resources) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let routes: BTreeMap<&str, _> = res.routes.iter().map(|r| (r.name.as_str(), r)).collect();
    for l in res.listeners.iter().filter(|l| l.api_listener.is_some()) {
        let cl = decode_listener(l)?;
        let Some(rc) = routes.get(cl.route_config_name.as_str()) else {
            continue;
        };
        let (host, port, protocol, mesh_external, table) = decode_route_configuration(rc)?;
        // Short-name aliases name the same route config as the FQDN one.
        let key = format!("{host}:{port}");
        if out.outbound.contains_key(&key) {
            continue;
        }
        out.outbound.insert(
            key,
            OutboundService {
                host,
                port,
                protocol,
                mesh_external,
                routes: Arc::new(table),
            },
        );
    }
    let clas: BTreeMap<&str, _> = res
        .endpoints
        .iter()
        .map(|e| (e.cluster_name.as_str(), e))
        .collect();
    // The hash key of each cluster routes send to with a hash policy (the
    // first such route's), for consistent-hash clusters of servers that
    // keep the key on the route only (istiod).
    let mut route_hash: BTreeMap<String, Value> = BTreeMap::new();
    for rc in &res.routes {
        for r in rc.virtual_hosts.iter().flat_map(|v| &v.routes) {
            let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(ra)) =
                &r.action
            else {
                continue;
            };
            let Some(key) = ra.hash_policy.first().and_then(cluster::route_hash_key) else {
                continue;
            };
            use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
            let names: Vec<&str> = match &ra.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => vec![c.as_str()],
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    w.clusters.iter().map(|c| c.name.as_str()).collect()
                }
                _ => Vec::new(),
            };
            for n in names {
                route_hash
                    .entry(n.to_string())
                    .or_insert_with(|| key.clone());
            }
        }
    }
    for c in &res.clusters {
        let cla = clas.get(c.name.as_str()).copied();
        let cl = cluster::decode_cluster_with(c, cla, route_hash.get(&c.name))?;
        out.clusters.insert(cl.name.clone(), cl);
    }
    Ok(out)
}

/// Our metadata object, when present.
pub(crate) fn mesh_md(md: Option<&Metadata>) -> Option<serde_json::Map<String, Value>> {
    match struct_to_json(md?.filter_metadata.get(MESH_METADATA)?) {
        Value::Object(o) => Some(o),
        _ => None,
    }
}
