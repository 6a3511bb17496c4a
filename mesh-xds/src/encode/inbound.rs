//! Server-side inbound listeners for gRPC's xDS servers (gRFC A36), as
//! istiod's proxyless generator builds them: named after the listener
//! resource name template istiod puts in the bootstrap
//! (`xds.istio.io/grpc/lds/inbound/{ip}:{port}`), filter chains chosen by
//! the PeerAuthentication mode of the port, an inline route config with a
//! single `non_forwarding_action` route, and RBAC filters before the router.
//!
//! PERMISSIVE is sent as one plaintext chain, as istiod's generator does.
//! gRPC servers (gRFC A36) cannot tell TLS from plaintext on a port (the
//! only `transport_protocol` they match is `raw_buffer`), yet they validate
//! every chain: a second, TLS chain naming the `default` certificate
//! provider makes grpcio NACK the whole listener when the bootstrap has no
//! certificate providers (a plaintext workload's), and the server never
//! starts serving.
//!
//! The RBAC filters are the workload's compiled authorization policy
//! lowered for stock gRPC servers (`super::rbac`); our SDK reads the whole
//! compiled inbound policy from the listener's `mesh` metadata instead
//! (`crate::inbound_policy`), and decodes the RBAC filters only when that
//! metadata is absent (another control plane).

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, transport_socket, Address, SocketAddress,
    TrafficDirection, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_match::PathSpecifier, Decorator, NonForwardingAction, Route,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{
        CertificateProviderInstance, CombinedCertificateValidationContext, ValidationContextType,
    },
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext,
};
use envoy_types::pb::google::protobuf::BoolValue;
use mesh_core::authz::{Protocol, StockServer};
use mesh_core::model::{Model, MtlsMode};

use super::listener::http_filter;
use super::rbac::rbac_filters;
use super::{CERT_NAME, CERT_PROVIDER, HCM_FILTER, ROOT_CERT_NAME, ROUTER_FILTER};
use crate::types::any;

/// Prefix of server listener names (istiod's `ServerListenerNamePrefix`).
pub const INBOUND_LISTENER_PREFIX: &str = "xds.istio.io/grpc/lds/inbound/";

/// The address in a server listener name a gRPC server asked for
/// (`xds.istio.io/grpc/lds/inbound/0.0.0.0:50051`, `...[::]:50051`), as the
/// `(ip, port)` pair [`super::EncodeOptions::inbound_addresses`] takes.
pub fn parse_inbound_listener_name(name: &str) -> Option<(String, u16)> {
    let addr = name.strip_prefix(INBOUND_LISTENER_PREFIX)?;
    let (ip, port) = addr.rsplit_once(':')?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    Some((ip.to_string(), port.parse().ok()?))
}

/// The listener name for a server on `ip:port` (IPv6 addresses bracketed).
pub fn inbound_listener_name(ip: &str, port: u16) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("{INBOUND_LISTENER_PREFIX}[{ip}]:{port}")
    } else {
        format!("{INBOUND_LISTENER_PREFIX}{ip}:{port}")
    }
}

// Both generations of the certificate-provider fields are filled: the
// deprecated `*_certificate_provider_instance` ones istiod's generator sends
// (what C-core, grpc-go and grpc-java of istiod's era read), and the current
// `tls_certificate_provider_instance` / `ca_certificate_provider_instance`,
// the only ones grpc-js-xds reads: without them it NACKs every TLS listener
// and cluster.
#[allow(deprecated)]
/// The common TLS context for proxyless gRPC: the workload certificate
/// (`default`/`default`) and the root bundle (`default`/`ROOTCA`) from the
/// `default` certificate provider instance (a `file_watcher` in the
/// bootstrap), with exact-match SANs to verify when given.
pub fn common_tls_context(sans: &[String]) -> CommonTlsContext {
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, StringMatcher,
    };
    let plugin = |certificate_name: &str| CertificateProviderPluginInstance {
        instance_name: CERT_PROVIDER.to_string(),
        certificate_name: certificate_name.to_string(),
    };
    CommonTlsContext {
        tls_certificate_provider_instance: Some(plugin(CERT_NAME)),
        tls_certificate_certificate_provider_instance: Some(CertificateProviderInstance {
            instance_name: CERT_PROVIDER.to_string(),
            certificate_name: CERT_NAME.to_string(),
        }),
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    ca_certificate_provider_instance: Some(plugin(ROOT_CERT_NAME)),
                    match_subject_alt_names: sans
                        .iter()
                        .map(|s| StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(s.clone())),
                            ignore_case: false,
                        })
                        .collect(),
                    ..Default::default()
                }),
                validation_context_certificate_provider_instance: Some(
                    CertificateProviderInstance {
                        instance_name: CERT_PROVIDER.to_string(),
                        certificate_name: ROOT_CERT_NAME.to_string(),
                    },
                ),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// How authorization reads connections to `port`: TCP semantics (HTTP
/// fields dropped from ALLOW rules, removed from DENY rules) for a port
/// its Service declares opaque TCP, HTTP otherwise, as the SDK's server
/// evaluates them.
fn authz_protocol(model: &Model, port: u16) -> Protocol {
    match model.inbound.ports.get(&port) {
        Some(p) if p.is_tcp() => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

/// The inbound listener for a server on `ip:port`.
pub fn inbound_listener(model: &Model, ip: &str, port: u16, stock: StockServer) -> Listener {
    let name = inbound_listener_name(ip, port);
    let hcm = HttpConnectionManager {
        stat_prefix: format!("inbound_{port}"),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "inbound".to_string(),
            virtual_hosts: vec![VirtualHost {
                name: "inbound".to_string(),
                domains: vec!["*".to_string()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                        ..Default::default()
                    }),
                    decorator: Some(Decorator {
                        operation: format!("{name}/*"),
                        propagate: None,
                    }),
                    action: Some(Action::NonForwardingAction(NonForwardingAction {})),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: rbac_filters(
            &model
                .inbound
                .authz
                .lower_for(authz_protocol(model, port), stock),
        )
        .into_iter()
        .chain(std::iter::once(http_filter(
            ROUTER_FILTER,
            &Router::default(),
        )))
        .collect(),
        ..Default::default()
    };
    let hcm_filter = Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
    };
    let tls = TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &DownstreamTlsContext {
                common_tls_context: Some(common_tls_context(&[])),
                require_client_certificate: Some(BoolValue { value: true }),
                ..Default::default()
            },
        ))),
    };
    // No filter_chain_match: every connection takes the one chain. An empty
    // match is not the same to every server: grpc-js-xds drops a chain
    // whose match names no `raw_buffer` transport protocol ("No filter
    // matched", every connection refused), and reads an absent match as
    // `raw_buffer`, as gRPC C-core does.
    let chain = |chain_name: &str, tls: Option<TransportSocket>| FilterChain {
        name: chain_name.to_string(),
        filter_chain_match: None,
        filters: vec![hcm_filter.clone()],
        transport_socket: tls,
        ..Default::default()
    };
    let mode = model.inbound.mtls.mode_for(port);
    let filter_chains = match mode {
        MtlsMode::Strict => vec![chain("inbound-mtls", Some(tls))],
        MtlsMode::Permissive | MtlsMode::Disable => vec![chain("inbound-plaintext", None)],
    };
    // PERMISSIVE and DISABLE give the same chains (as istiod's do); the
    // whole inbound policy, mTLS modes included, rides in our metadata for
    // SDK servers fed by xDS (see `crate::inbound_policy` for why not only
    // RBAC).
    let mut md = serde_json::Map::new();
    md.insert(
        crate::inbound_policy::INBOUND_KEY.into(),
        crate::inbound_policy::to_json(&model.inbound),
    );
    Listener {
        name,
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.trim_start_matches('[').trim_end_matches(']').to_string(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
                ..Default::default()
            })),
        }),
        filter_chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        metadata: super::mesh_metadata(md),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_names_round_trip() {
        for (ip, port) in [("0.0.0.0", 50051), ("::", 8080), ("10.1.2.3", 1)] {
            let name = inbound_listener_name(ip, port);
            assert_eq!(
                parse_inbound_listener_name(&name),
                Some((ip.to_string(), port))
            );
        }
        assert_eq!(
            inbound_listener_name("::", 1),
            "xds.istio.io/grpc/lds/inbound/[::]:1"
        );
        assert_eq!(parse_inbound_listener_name("reviews:9080"), None);
    }
}
