//! Client-side listeners (LDS): one `api_listener` per outbound `host:port`,
//! as istiod's proxyless generator builds them and gRPC's xDS resolver
//! (gRFC A27) expects: an HttpConnectionManager that names its route config
//! over ADS, with the fault filter (when a route injects faults) and the
//! router.

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
    HttpFilter, Rds,
};
use mesh_core::host;
use mesh_core::model::{Model, OutboundService};

use super::{FAULT_FILTER, ROUTER_FILTER};
use crate::types::any;

/// The ADS config source.
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// An HTTP filter with a typed config.
pub fn http_filter<T: prost::Message + prost::Name>(name: &str, config: &T) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// Other names this model's client may dial the service by (`name:port`
/// from the service's own namespace, `name.ns:port` and `name.ns.svc:port`
/// from any), each resolving to the FQDN as the SDK and `meshctl x route`
/// resolve it ([`mesh_core::host::short_names`]). A name that is itself an
/// outbound service is left to that service, as resolution tries the name
/// as written first.
pub fn short_names(svc: &OutboundService, model: &Model) -> Vec<String> {
    host::short_names(
        &svc.host,
        &model.client.namespace,
        &model.mesh.domain_suffix,
    )
    .into_iter()
    .map(|short| format!("{short}:{}", svc.port))
    .filter(|alias| !model.outbound.contains_key(alias))
    .collect()
}

/// The client-side listener `name` (`host:port`, or a short-name alias of
/// it) for outbound service `svc`; its RDS name is
/// [`super::route::route_config_name`] as istiod names it.
pub fn outbound_listener(name: &str, svc: &OutboundService) -> Listener {
    let mut filters = Vec::new();
    // Redirects and direct responses become aborts for stock gRPC clients
    // (see `super::route::route_configuration_for`).
    if svc
        .routes
        .routes
        .iter()
        .any(|r| r.fault.is_some() || !matches!(r.action, mesh_core::route::Action::Forward(_)))
    {
        filters.push(http_filter(FAULT_FILTER, &HttpFault::default()));
    }
    filters.push(http_filter(ROUTER_FILTER, &Router::default()));
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: super::route::route_config_name(&svc.host, svc.port),
        })),
        http_filters: filters,
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    }
}
