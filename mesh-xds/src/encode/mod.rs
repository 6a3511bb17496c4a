//! Model -> Envoy v3: the resources istiod's proxyless-gRPC generator would
//! send one client for the same config.
//!
//! One call ([`encode`]) gives all four resource types plus the server-side
//! inbound listeners. Names follow istiod's gRPC generator: listeners
//! `host:port` (plus short-name aliases), route configs and clusters
//! `outbound|port|subset|host` (a route config is named after the service
//! port's default cluster; EDS service names equal cluster names), inbound listeners `xds.istio.io/grpc/lds/inbound/{ip}:{port}`.
//!
//! Everything the SDK or a gRPC client executes is carried in Envoy fields.
//! Bits that only explain a config (VirtualService name, rule index, the
//! DestinationRule name, settings gRPC has no field for) ride in
//! `metadata.filter_metadata["mesh"]`, which [`crate::decode`] reads back.

pub(crate) mod cluster;
mod inbound;
mod listener;
mod rbac;
pub(crate) mod route;

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, core::v3::Metadata, endpoint::v3::ClusterLoadAssignment,
    listener::v3::Listener, route::v3::RouteConfiguration,
};
use mesh_core::model::Model;

pub use cluster::{encode_cluster, encode_endpoints};
pub use inbound::{
    inbound_listener, inbound_listener_name, parse_inbound_listener_name, INBOUND_LISTENER_PREFIX,
};
pub use listener::outbound_listener;
pub use rbac::{encode_filter, rbac_filters};
pub use route::{route_config_name, route_configuration};

/// Key of our own metadata in `filter_metadata`.
pub const MESH_METADATA: &str = "mesh";
/// Name of the fault filter.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Name of the router filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub use mesh_core::authz::{
    HTTP_ALLOW_FILTER as RBAC_FILTER, HTTP_DENY_FILTER as RBAC_DENY_FILTER,
};
/// Name of the HTTP connection manager network filter.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// Certificate provider instance name istiod uses for proxyless gRPC.
pub const CERT_PROVIDER: &str = "default";
/// Certificate name of the workload certificate within the provider.
pub const CERT_NAME: &str = "default";
/// Certificate name of the root bundle within the provider.
pub const ROOT_CERT_NAME: &str = "ROOTCA";

/// What the encoder needs besides the model.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Addresses the workload's gRPC servers listen on (`ip`, `port`). When
    /// empty, one listener on `0.0.0.0` per inbound port of the model.
    pub inbound_addresses: Vec<(String, u16)>,
    /// Also send listeners under the short names a gRPC client may dial
    /// (`xds:///reviews:9080` from the service's namespace,
    /// `reviews.ns:9080` and `reviews.ns.svc:9080` from any), each naming
    /// the FQDN route config: the names the SDK and `meshctl x route`
    /// resolve to that service (`mesh_core::host::short_names`). istiod expands
    /// only names relative to the client's own namespace; Kubernetes DNS,
    /// and so a sidecar's client, also reaches `reviews.ns` from elsewhere.
    /// Default true.
    pub short_name_listeners: bool,
    /// Send Istio mTLS (the certificate-provider transport socket) to
    /// clusters without DestinationRule TLS whose endpoints are all in the
    /// mesh (auto mTLS). istiod's gRPC generator only does it for an
    /// explicit ISTIO_MUTUAL, because a gRPC client without xDS credentials
    /// ignores it and PERMISSIVE servers cannot be reached; default false to
    /// match.
    pub auto_mtls: bool,
    /// The client is a proxyless gRPC client (Istio's agent and `meshctl
    /// bootstrap grpc` say `GENERATOR: grpc` in its node metadata). Routes
    /// that redirect or answer directly are then left out, as istiod's gRPC
    /// generator does: gRPC cannot follow them, and grpc-js-xds NACKs a
    /// whole RouteConfiguration that contains one ("unsupported action"),
    /// which breaks every route of the service. Default false.
    pub proxyless_grpc: bool,
    /// Which stock gRPC server evaluates the inbound listeners' RBAC
    /// filters (what it cannot see is lowered fail-closed). Default A41's.
    pub stock_server: mesh_core::authz::StockServer,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            inbound_addresses: Vec::new(),
            short_name_listeners: true,
            auto_mtls: false,
            proxyless_grpc: false,
            stock_server: mesh_core::authz::StockServer::Grpc,
        }
    }
}

/// The Envoy resources for one client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Client-side api_listeners and server-side inbound listeners.
    pub listeners: Vec<Listener>,
    /// One route configuration per outbound service.
    pub routes: Vec<RouteConfiguration>,
    /// One cluster per model cluster.
    pub clusters: Vec<Cluster>,
    /// One load assignment per cluster.
    pub endpoints: Vec<ClusterLoadAssignment>,
}

/// Encodes a whole model.
pub fn encode(model: &Model, opts: &EncodeOptions) -> Resources {
    let mut out = Resources::default();
    for (name, svc) in &model.outbound {
        out.listeners.push(outbound_listener(name, svc));
        if opts.short_name_listeners {
            for alias in listener::short_names(svc, model) {
                out.listeners.push(outbound_listener(&alias, svc));
            }
        }
        out.routes.push(route::route_configuration_for(
            name,
            svc,
            model,
            opts.proxyless_grpc,
        ));
    }
    let addrs: Vec<(String, u16)> = if opts.inbound_addresses.is_empty() {
        model
            .inbound
            .ports
            .keys()
            .map(|p| ("0.0.0.0".to_string(), *p))
            .collect()
    } else {
        opts.inbound_addresses.clone()
    };
    for (ip, port) in &addrs {
        out.listeners
            .push(inbound_listener(model, ip, *port, opts.stock_server));
    }
    for c in model.clusters.values() {
        out.clusters.push(encode_cluster(c, model, opts.auto_mtls));
        out.endpoints.push(encode_endpoints(c));
    }
    out
}

/// Metadata with our JSON object under [`MESH_METADATA`] (nothing when empty).
pub(crate) fn mesh_metadata(obj: serde_json::Map<String, serde_json::Value>) -> Option<Metadata> {
    if obj.is_empty() {
        return None;
    }
    let mut md = Metadata::default();
    md.filter_metadata.insert(
        MESH_METADATA.to_string(),
        crate::types::json_to_struct(&obj),
    );
    Some(md)
}
