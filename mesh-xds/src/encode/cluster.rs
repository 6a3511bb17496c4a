//! Clusters (CDS) and ClusterLoadAssignments (EDS).
//!
//! A cluster is EDS over ADS with its service name equal to the cluster
//! name, as istiod's proxyless generator sends. The DestinationRule policy
//! is carried in the fields gRPC reads: `lb_policy` plus
//! `load_balancing_policy` (gRFC A52 typed policies: ring hash, maglev, or
//! `wrr_locality` over round robin / least request / random), circuit
//! breakers (A32), outlier detection (A50), locality weighting and the
//! upstream TLS socket with certificate-provider instances (A29). Settings
//! without an Envoy field gRPC honours ride in `filter_metadata["mesh"]`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy,
        MaglevLbConfig, RingHashLbConfig,
    },
    load_balancing_policy::Policy as LbPolicyEntry,
    CircuitBreakers, Cluster as EnvoyCluster, LoadBalancingPolicy, OutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, transport_socket, Address, HealthStatus, Locality,
    Metadata, SocketAddress, TransportSocket, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::{
    least_request::v3::LeastRequest,
    maglev::v3::Maglev,
    random::v3::Random,
    ring_hash::v3::{ring_hash, RingHash},
    round_robin::v3::RoundRobin,
    wrr_locality::v3::WrrLocality,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::r#type::v3::Percent;
use mesh_core::config::networking::destination_rule::{ClientTlsMode, SimpleLb};
use mesh_core::model::{Cluster, Model};
use mesh_core::registry::TlsMode;
use serde_json::{json, Map, Value};

use super::inbound::common_tls_context;
use super::listener::ads;
use super::MESH_METADATA;
use crate::types::{any, dur, json_to_struct, u32v};

/// Istio's default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Paths (within the serialized [`mesh_core::model::ClusterPolicy`]) of the
/// settings carried in Envoy fields; everything else stays in metadata.
pub(crate) const ENVOY_CARRIED: &[&[&str]] = &[
    &["connection_pool", "tcp", "maxConnections"],
    &["connection_pool", "http", "http1MaxPendingRequests"],
    &["connection_pool", "http", "http2MaxRequests"],
    &["connection_pool", "http", "maxRetries"],
    &["outlier_detection", "consecutive5xxErrors"],
    &["outlier_detection", "consecutiveGatewayErrors"],
    &["outlier_detection", "consecutiveLocalOriginFailures"],
    &["outlier_detection", "splitExternalLocalOriginErrors"],
    &["outlier_detection", "interval"],
    &["outlier_detection", "baseEjectionTime"],
    &["outlier_detection", "maxEjectionPercent"],
    &["outlier_detection", "minHealthPercent"],
    &["load_balancer", "consistentHash", "ringHash"],
    &["load_balancer", "consistentHash", "maglev"],
    &["load_balancer", "consistentHash", "minimumRingSize"],
];

fn remove_path(v: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(o) = cur.as_object_mut() {
        o.remove(*last);
    }
}

/// True when the cluster's connections use Istio mTLS: the DestinationRule
/// says ISTIO_MUTUAL, or (with `auto_mtls`) it says nothing and every
/// endpoint is in the mesh.
pub fn uses_istio_mtls(c: &Cluster, auto_mtls: bool) -> bool {
    match c.policy.tls.as_ref().and_then(|t| t.mode) {
        Some(ClientTlsMode::IstioMutual) => true,
        Some(_) => false,
        None => {
            auto_mtls
                && c.policy.tls.is_none()
                && !c.endpoints.is_empty()
                && c.endpoints.iter().all(|e| e.tls_mode == TlsMode::Istio)
        }
    }
}

fn typed_policy<T: prost::Message + prost::Name>(name: &str, m: &T) -> LbPolicyEntry {
    LbPolicyEntry {
        typed_extension_config: Some(TypedExtensionConfig {
            name: name.to_string(),
            typed_config: Some(any(m)),
        }),
    }
}

/// The typed ring-hash policy. The hash function is named: gRPC hashes
/// with xxHash only, and grpc-js-xds rejects the cluster (NACK) when the
/// field is left at `DEFAULT_HASH`, which Envoy reads as xxHash anyway.
fn ring_hash(
    minimum_ring_size: Option<envoy_types::pb::google::protobuf::UInt64Value>,
) -> RingHash {
    RingHash {
        hash_function: ring_hash::HashFunction::XxHash as i32,
        minimum_ring_size,
        ..Default::default()
    }
}

/// The Envoy cluster for a model cluster.
pub fn encode_cluster(c: &Cluster, model: &Model, auto_mtls: bool) -> EnvoyCluster {
    let p = &c.policy;
    let mut ec = EnvoyCluster {
        name: c.name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: c.name.clone(),
        }),
        connect_timeout: Some(dur(p
            .connection_pool
            .as_ref()
            .and_then(|cp| cp.tcp.as_ref())
            .and_then(|t| t.connect_timeout)
            .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.get()))),
        ..Default::default()
    };

    // Load balancing.
    let lb = p.load_balancer.as_ref();
    let ch = lb.and_then(|l| l.consistent_hash.as_ref());
    let mut common = CommonLbConfig::default();
    if let Some(ch) = ch {
        if let Some(m) = ch.maglev {
            ec.lb_policy = LbPolicy::Maglev as i32;
            let table = m.table_size.map(crate::types::u64v);
            ec.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: table,
            }));
            // gRPC has no maglev: it takes the next policy it knows, ring
            // hash, which keeps the consistent-hash affinity.
            ec.load_balancing_policy = Some(LoadBalancingPolicy {
                policies: vec![
                    typed_policy(
                        "envoy.load_balancing_policies.maglev",
                        &Maglev {
                            table_size: table,
                            ..Default::default()
                        },
                    ),
                    typed_policy("envoy.load_balancing_policies.ring_hash", &ring_hash(None)),
                ],
            });
        } else {
            ec.lb_policy = LbPolicy::RingHash as i32;
            let min = ch
                .ring_hash
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .map(crate::types::u64v);
            ec.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: min,
                ..Default::default()
            }));
            ec.load_balancing_policy = Some(LoadBalancingPolicy {
                policies: vec![typed_policy(
                    "envoy.load_balancing_policies.ring_hash",
                    &ring_hash(min),
                )],
            });
        }
    } else {
        let simple = lb.and_then(|l| l.simple).unwrap_or_default();
        // The child list ends in round robin so a client without the chosen
        // picker (gRPC takes the first policy it supports) still accepts it.
        let round_robin = || {
            typed_policy(
                "envoy.load_balancing_policies.round_robin",
                &RoundRobin::default(),
            )
        };
        let (policy, child) = match simple {
            SimpleLb::LeastConn | SimpleLb::LeastRequest => (
                LbPolicy::LeastRequest,
                typed_policy(
                    "envoy.load_balancing_policies.least_request",
                    &LeastRequest::default(),
                ),
            ),
            SimpleLb::Random => (
                LbPolicy::Random,
                typed_policy("envoy.load_balancing_policies.random", &Random::default()),
            ),
            _ => (LbPolicy::RoundRobin, round_robin()),
        };
        let mut children = vec![child];
        if policy != LbPolicy::RoundRobin {
            children.push(round_robin());
        }
        ec.lb_policy = policy as i32;
        ec.load_balancing_policy = Some(LoadBalancingPolicy {
            policies: vec![typed_policy(
                "envoy.load_balancing_policies.wrr_locality",
                &WrrLocality {
                    endpoint_picking_policy: Some(LoadBalancingPolicy { policies: children }),
                },
            )],
        });
        common.locality_config_specifier = Some(
            envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                Default::default(),
            ),
        );
    }

    // Circuit breakers (gRFC A32 reads max_requests).
    if let Some(cp) = &p.connection_pool {
        let tcp = cp.tcp.as_ref();
        let http = cp.http.as_ref();
        let t = Thresholds {
            max_connections: tcp.and_then(|t| t.max_connections).map(u32v),
            max_pending_requests: http.and_then(|h| h.http1_max_pending_requests).map(u32v),
            max_requests: http.and_then(|h| h.http2_max_requests).map(u32v),
            max_retries: http.and_then(|h| h.max_retries).map(u32v),
            ..Default::default()
        };
        if t != Thresholds::default() {
            ec.circuit_breakers = Some(CircuitBreakers {
                thresholds: vec![t],
                ..Default::default()
            });
        }
    }

    // Outlier detection (gRFC A50), Istio's enforcement defaults.
    if let Some(od) = &p.outlier_detection {
        let five = od.consecutive_5xx_errors.or(od.consecutive_errors);
        let mut o = OutlierDetection {
            consecutive_5xx: five.map(u32v),
            enforcing_consecutive_5xx: Some(u32v(if five.unwrap_or(0) > 0 { 100 } else { 0 })),
            consecutive_gateway_failure: od.consecutive_gateway_errors.map(u32v),
            enforcing_consecutive_gateway_failure: od
                .consecutive_gateway_errors
                .map(|g| u32v(if g > 0 { 100 } else { 0 })),
            split_external_local_origin_errors: od.split_external_local_origin_errors == Some(true),
            consecutive_local_origin_failure: od.consecutive_local_origin_failures.map(u32v),
            interval: od.interval.map(|d| dur(d.get())),
            base_ejection_time: od.base_ejection_time.map(|d| dur(d.get())),
            max_ejection_percent: od.max_ejection_percent.map(u32v),
            enforcing_success_rate: Some(u32v(0)),
            ..Default::default()
        };
        if o.split_external_local_origin_errors {
            o.enforcing_consecutive_local_origin_failure = Some(u32v(100));
        }
        ec.outlier_detection = Some(o);
        if let Some(m) = od.min_health_percent {
            common.healthy_panic_threshold = Some(Percent {
                value: f64::from(m),
            });
        }
    }
    if common != CommonLbConfig::default() {
        ec.common_lb_config = Some(common);
    }

    // Upstream TLS with the certificate providers istiod names.
    if uses_istio_mtls(c, auto_mtls) {
        let mut sans: Vec<String> = c
            .endpoints
            .iter()
            .filter_map(|e| e.identity.clone())
            .collect();
        sans.sort();
        sans.dedup();
        ec.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                &UpstreamTlsContext {
                    common_tls_context: Some(common_tls_context(&sans)),
                    ..Default::default()
                },
            ))),
        });
    }

    // Metadata: Istio's service description, then ours.
    let mut extra = serde_json::to_value(p).unwrap_or_else(|_| json!({}));
    for path in ENVOY_CARRIED {
        remove_path(&mut extra, path);
    }
    let simple_in_lb_policy = lb.and_then(|l| l.simple).is_some_and(|simple| {
        matches!(
            simple,
            SimpleLb::RoundRobin | SimpleLb::LeastRequest | SimpleLb::Random
        )
    });
    if simple_in_lb_policy {
        remove_path(&mut extra, &["load_balancer", "simple"]);
    }
    let (svc_name, ns) =
        mesh_core::host::service_of(&c.host, &model.mesh.domain_suffix).unwrap_or((&c.host, ""));
    let mut istio = Map::new();
    istio.insert(
        "services".into(),
        json!([{ "host": c.host, "name": svc_name, "namespace": ns }]),
    );
    istio.insert("default_original_port".into(), json!(c.port));
    if let Some(s) = &c.subset {
        istio.insert("subset".into(), json!(s));
    }
    if let Some(dr) = &p.destination_rule {
        istio.insert(
            "config".into(),
            json!(format!(
                "/apis/networking.istio.io/v1/namespaces/{}/destination-rule/{}",
                dr.split_once('/').map_or("", |x| x.0),
                dr.split_once('/').map_or(dr.as_str(), |x| x.1)
            )),
        );
    }
    let mut mesh = Map::new();
    mesh.insert("host".into(), json!(c.host));
    mesh.insert("port".into(), json!(c.port));
    if let Some(s) = &c.subset {
        mesh.insert("subset".into(), json!(s));
    }
    mesh.insert(
        "protocol".into(),
        serde_json::to_value(c.protocol).unwrap_or(Value::Null),
    );
    mesh.insert(
        "resolution".into(),
        serde_json::to_value(c.resolution).unwrap_or(Value::Null),
    );
    if let Some(dns) = &c.dns {
        // In our metadata, not in Envoy's `dns_refresh_rate`: the cluster
        // is EDS, and gRPC clients read the hosts from its endpoints.
        mesh.insert(
            "dns".into(),
            serde_json::to_value(dns).unwrap_or(Value::Null),
        );
    }
    mesh.insert("policy".into(), extra);
    if simple_in_lb_policy {
        mesh.insert("simple_in_lb_policy".into(), json!(true));
    }
    let mut md = Metadata::default();
    md.filter_metadata
        .insert("istio".into(), json_to_struct(&istio));
    md.filter_metadata
        .insert(MESH_METADATA.into(), json_to_struct(&mesh));
    ec.metadata = Some(md);
    ec
}

/// The load assignment of a cluster: endpoints grouped by locality
/// (`region/zone/subzone`), each locality weighted by the sum of its
/// endpoints' weights, all at priority 0 and HEALTHY (the registry only
/// lists ready endpoints).
pub fn encode_endpoints(c: &Cluster) -> ClusterLoadAssignment {
    let mut groups: BTreeMap<String, Vec<LbEndpoint>> = BTreeMap::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        let mut mesh = Map::new();
        mesh.insert("index".into(), json!(i));
        if !e.labels.is_empty() {
            mesh.insert("labels".into(), json!(e.labels));
        }
        if let Some(id) = &e.identity {
            mesh.insert("identity".into(), json!(id));
        }
        let tls = match e.tls_mode {
            TlsMode::Istio => "istio",
            TlsMode::Disabled => "disabled",
        };
        let mut md = Metadata::default();
        md.filter_metadata.insert(
            "envoy.transport_socket_match".into(),
            json_to_struct(
                json!({ "tlsMode": tls })
                    .as_object()
                    .cloned()
                    .as_ref()
                    .unwrap_or(&Map::new()),
            ),
        );
        md.filter_metadata
            .insert(MESH_METADATA.into(), json_to_struct(&mesh));
        let lbe = LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: e.address.clone(),
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(e.port))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            health_status: HealthStatus::Healthy as i32,
            load_balancing_weight: Some(u32v(e.weight.max(1))),
            metadata: Some(md),
        };
        groups
            .entry(e.locality.clone().unwrap_or_default())
            .or_default()
            .push(lbe);
    }
    let endpoints = groups
        .into_iter()
        .map(|(loc, lbes)| {
            let mut parts = loc.splitn(3, '/');
            let locality = Locality {
                region: parts.next().unwrap_or("").to_string(),
                zone: parts.next().unwrap_or("").to_string(),
                sub_zone: parts.next().unwrap_or("").to_string(),
            };
            let weight: u32 = lbes
                .iter()
                .filter_map(|e| e.load_balancing_weight.as_ref().map(|w| w.value))
                .fold(0u32, u32::saturating_add);
            LocalityLbEndpoints {
                locality: Some(locality),
                lb_endpoints: lbes,
                load_balancing_weight: Some(u32v(weight.max(1))),
                priority: 0,
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints,
        ..Default::default()
    }
}
