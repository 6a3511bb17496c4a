//! Cluster + ClusterLoadAssignment -> model cluster.

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy},
    Cluster as EnvoyCluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, HealthStatus,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    hash_policy::PolicySpecifier, HashPolicy,
};
use mesh_core::config::common::Duration;
use mesh_core::config::kube::Protocol;
use mesh_core::model::{Cluster, ClusterEndpoint, ClusterPolicy, DnsRefresh};
use mesh_core::registry::{Resolution, TlsMode};
use serde_json::{json, Map, Value};

use super::{mesh_md, DecodeError};
use crate::types::{from_dur, struct_to_json};

/// Splits Istio's `outbound|port|subset|host` into host, port and subset;
/// any other name is a host without port.
pub fn parse_cluster_name(name: &str) -> (String, Option<u16>, Option<String>) {
    let parts: Vec<&str> = name.splitn(4, '|').collect();
    match parts.as_slice() {
        [_, port, subset, host] => (
            host.to_string(),
            port.parse().ok(),
            (!subset.is_empty()).then(|| subset.to_string()),
        ),
        _ => (name.to_string(), None, None),
    }
}

fn set_path(root: &mut Value, path: &[&str], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = root;
    for p in parents {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(o) = cur.as_object_mut() else { return };
        cur = o.entry(p.to_string()).or_insert_with(|| json!({}));
    }
    if !cur.is_object() {
        *cur = json!({});
    }
    if let Some(o) = cur.as_object_mut() {
        o.insert(last.to_string(), v);
    }
}

fn dur_json(d: &envoy_types::pb::google::protobuf::Duration) -> Value {
    serde_json::to_value(Duration(from_dur(d))).unwrap_or(Value::Null)
}

/// Decodes a cluster and (when given) its load assignment.
pub fn decode_cluster(
    c: &EnvoyCluster,
    cla: Option<&ClusterLoadAssignment>,
) -> Result<Cluster, DecodeError> {
    decode_cluster_with(c, cla, None)
}

/// The hash key of a route's first hash policy, in DestinationRule
/// `consistentHash` form: where Envoy (and istiod) put the key a
/// consistent-hash cluster hashes on.
pub(crate) fn route_hash_key(hp: &HashPolicy) -> Option<Value> {
    Some(match hp.policy_specifier.as_ref()? {
        PolicySpecifier::Header(h) => json!({"httpHeaderName": h.header_name}),
        PolicySpecifier::Cookie(c) => {
            let mut cookie = json!({"name": c.name});
            if let Some(ttl) = &c.ttl {
                cookie["ttl"] = dur_json(ttl);
            }
            if !c.path.is_empty() {
                cookie["path"] = json!(c.path);
            }
            json!({"httpCookie": cookie})
        }
        PolicySpecifier::ConnectionProperties(p) if p.source_ip => json!({"useSourceIp": true}),
        PolicySpecifier::QueryParameter(q) => json!({"httpQueryParameterName": q.name}),
        _ => return None,
    })
}

/// [`decode_cluster`], with the hash key the routes to the cluster carry
/// (used when the cluster is a consistent-hash one without ours).
pub(crate) fn decode_cluster_with(
    c: &EnvoyCluster,
    cla: Option<&ClusterLoadAssignment>,
    route_hash: Option<&Value>,
) -> Result<Cluster, DecodeError> {
    let md = mesh_md(c.metadata.as_ref());
    let (nhost, nport, nsubset) = parse_cluster_name(&c.name);
    let m = md.clone().unwrap_or_default();
    let host = m
        .get("host")
        .and_then(Value::as_str)
        .map_or(nhost, str::to_string);
    let port = m
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .or(nport)
        .ok_or_else(|| DecodeError::invalid(&c.name, "no port in the cluster name or metadata"))?;
    let subset = match m.get("subset").and_then(Value::as_str) {
        Some(s) => Some(s.to_string()),
        None if md.is_some() => None,
        None => nsubset,
    };
    let protocol = m
        .get("protocol")
        .and_then(Value::as_str)
        .map_or(Protocol::Http, Protocol::parse);
    let (resolution, dns) = if md.is_some() {
        let resolution = match m.get("resolution").and_then(Value::as_str) {
            Some("DNS") => Resolution::Dns,
            Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
            Some("PASSTHROUGH") => Resolution::Passthrough,
            _ => Resolution::Static,
        };
        (resolution, m.get("dns").and_then(dns_refresh_md))
    } else {
        envoy_resolution(c)
    };

    // Policy: our metadata's sections decide which exist (for our own
    // clusters); Envoy fields fill in what they carry.
    let ours = md.is_some();
    let mut p = m.get("policy").cloned().unwrap_or_else(|| json!({}));
    let has = |p: &Value, k: &str| p.get(k).is_some();
    // Load balancer.
    let lb_policy = LbPolicy::try_from(c.lb_policy).unwrap_or(LbPolicy::RoundRobin);
    match lb_policy {
        LbPolicy::RingHash => {
            if let Some(LbConfig::RingHashLbConfig(r)) = &c.lb_config {
                // 1024 is Envoy's default minimum, which istiod names.
                if let Some(min) = r
                    .minimum_ring_size
                    .as_ref()
                    .filter(|m| ours || m.value != 1024)
                {
                    set_path(
                        &mut p,
                        &[
                            "load_balancer",
                            "consistentHash",
                            "ringHash",
                            "minimumRingSize",
                        ],
                        json!(min.value),
                    );
                }
            }
            if !has(&p, "load_balancer") {
                set_path(&mut p, &["load_balancer", "consistentHash"], json!({}));
            }
            if let (false, Some(Value::Object(key))) = (ours, route_hash) {
                for (k, v) in key {
                    set_path(&mut p, &["load_balancer", "consistentHash", k], v.clone());
                }
            }
        }
        LbPolicy::Maglev => {
            let mut t = Map::new();
            if let Some(LbConfig::MaglevLbConfig(m)) = &c.lb_config {
                if let Some(ts) = &m.table_size {
                    t.insert("tableSize".into(), json!(ts.value));
                }
            }
            set_path(
                &mut p,
                &["load_balancer", "consistentHash", "maglev"],
                Value::Object(t),
            );
        }
        other => {
            let simple = match other {
                LbPolicy::LeastRequest => "LEAST_REQUEST",
                LbPolicy::Random => "RANDOM",
                _ => "ROUND_ROBIN",
            };
            // Round robin is the default: a server that names it (istiod
            // does) means the same as one that leaves it unset.
            let from_envoy = if ours {
                m.get("simple_in_lb_policy").and_then(Value::as_bool) == Some(true)
            } else {
                other != LbPolicy::RoundRobin
            };
            if from_envoy {
                set_path(&mut p, &["load_balancer", "simple"], json!(simple));
            }
        }
    }
    // Circuit breakers.
    if let Some(t) = c
        .circuit_breakers
        .as_ref()
        .and_then(|cb| cb.thresholds.first())
    {
        let fields: [(&[&str], Option<u32>); 4] = [
            (
                &["connection_pool", "tcp", "maxConnections"],
                t.max_connections.as_ref().map(|v| v.value),
            ),
            (
                &["connection_pool", "http", "http1MaxPendingRequests"],
                t.max_pending_requests.as_ref().map(|v| v.value),
            ),
            (
                &["connection_pool", "http", "http2MaxRequests"],
                t.max_requests.as_ref().map(|v| v.value),
            ),
            (
                &["connection_pool", "http", "maxRetries"],
                t.max_retries.as_ref().map(|v| v.value),
            ),
        ];
        for (path, v) in fields {
            if let Some(v) = v {
                set_path(&mut p, path, json!(v));
            }
        }
    }
    if !ours {
        if let Some(ct) = &c.connect_timeout {
            set_path(
                &mut p,
                &["connection_pool", "tcp", "connectTimeout"],
                dur_json(ct),
            );
        }
    }
    // Outlier detection.
    if let Some(od) = &c.outlier_detection {
        let base = ["outlier_detection"];
        let mut put = |k: &str, v: Value| {
            let mut path: Vec<&str> = base.to_vec();
            path.push(k);
            set_path(&mut p, &path, v);
        };
        if let Some(v) = &od.consecutive_5xx {
            let deprecated_same = m
                .get("policy")
                .and_then(|x| x.get("outlier_detection"))
                .and_then(|x| x.get("consecutiveErrors"))
                .and_then(Value::as_u64)
                == Some(u64::from(v.value));
            if !deprecated_same {
                put("consecutive5xxErrors", json!(v.value));
            }
        }
        if let Some(v) = &od.consecutive_gateway_failure {
            put("consecutiveGatewayErrors", json!(v.value));
        }
        if let Some(v) = &od.consecutive_local_origin_failure {
            put("consecutiveLocalOriginFailures", json!(v.value));
        }
        if od.split_external_local_origin_errors {
            put("splitExternalLocalOriginErrors", json!(true));
        }
        if let Some(v) = &od.interval {
            put("interval", dur_json(v));
        }
        if let Some(v) = &od.base_ejection_time {
            put("baseEjectionTime", dur_json(v));
        }
        if let Some(v) = &od.max_ejection_percent {
            put("maxEjectionPercent", json!(v.value));
        }
        if let Some(t) = c
            .common_lb_config
            .as_ref()
            .and_then(|x| x.healthy_panic_threshold.as_ref())
        {
            // Whole percentages only (Istio's field is an integer).
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            put("minHealthPercent", json!(t.value.round() as u32));
        }
        if !has(&p, "outlier_detection") {
            set_path(&mut p, &["outlier_detection"], json!({}));
        }
    }
    let bad =
        |what: &str, e: serde_json::Error| DecodeError::invalid(&c.name, format!("{what}: {e}"));
    let section = |k: &str| p.get(k).cloned().filter(|v| !v.is_null());
    let policy = ClusterPolicy {
        destination_rule: section("destination_rule").and_then(|v| v.as_str().map(str::to_string)),
        load_balancer: section("load_balancer")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("load balancer", e))?,
        connection_pool: section("connection_pool")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("connection pool", e))?,
        outlier_detection: section("outlier_detection")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("outlier detection", e))?,
        tls: section("tls")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("tls", e))?,
    };
    Ok(Cluster {
        name: c.name.clone(),
        host,
        port,
        subset,
        protocol,
        resolution,
        policy,
        // DNS clusters of other control planes carry their hosts inline.
        endpoints: cla
            .or(c.load_assignment.as_ref())
            .map(decode_endpoints)
            .unwrap_or_default(),
        dns,
    })
}

/// The resolution of a cluster another control plane sent, from its
/// discovery type: STRICT_DNS is Istio's DNS, LOGICAL_DNS its
/// DNS_ROUND_ROBIN, with the cluster's refresh settings.
// `dns_refresh_rate` and `respect_dns_ttl` are deprecated in Envoy (in
// favour of the DNS cluster extension), but they are what Istio sends.
#[allow(deprecated)]
fn envoy_resolution(c: &EnvoyCluster) -> (Resolution, Option<DnsRefresh>) {
    let resolution = match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::StrictDns as i32 => {
            Resolution::Dns
        }
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::LogicalDns as i32 => {
            Resolution::DnsRoundRobin
        }
        _ => return (Resolution::Static, None),
    };
    let dns = DnsRefresh {
        rate: c
            .dns_refresh_rate
            .as_ref()
            .map(|d| Duration(from_dur(d)))
            .filter(|d| !d.get().is_zero()),
        respect_ttl: c.respect_dns_ttl,
    };
    (resolution, Some(dns))
}

/// Our metadata's `dns` object (see the encoder).
fn dns_refresh_md(v: &Value) -> Option<DnsRefresh> {
    Some(DnsRefresh {
        rate: v
            .get("rate")
            .and_then(|r| serde_json::from_value(r.clone()).ok()),
        respect_ttl: v.get("respect_ttl")?.as_bool()?,
    })
}

/// The endpoints of a load assignment, in the order they were encoded when
/// our metadata says so.
pub fn decode_endpoints(cla: &ClusterLoadAssignment) -> Vec<ClusterEndpoint> {
    let mut out: Vec<(u64, ClusterEndpoint)> = Vec::new();
    for (li, group) in cla.endpoints.iter().enumerate() {
        let locality = group.locality.as_ref().and_then(|l| {
            let parts = [&l.region, &l.zone, &l.sub_zone];
            let n = parts.iter().rposition(|s| !s.is_empty())?;
            Some(
                parts[..=n]
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("/"),
            )
        });
        for (ei, e) in group.lb_endpoints.iter().enumerate() {
            let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                continue;
            };
            // Endpoints another control plane marks unusable are left out.
            if matches!(
                HealthStatus::try_from(e.health_status),
                Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout)
            ) {
                continue;
            }
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let port = match sa.port_specifier {
                Some(PortSpecifier::PortValue(p)) => u16::try_from(p).unwrap_or(0),
                _ => 0,
            };
            let md = mesh_md(e.metadata.as_ref()).unwrap_or_default();
            let tls = e
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                .map(struct_to_json)
                .and_then(|v| v.get("tlsMode").and_then(Value::as_str).map(str::to_string));
            let fallback = (li as u64) << 32 | ei as u64;
            out.push((
                md.get("index").and_then(Value::as_u64).unwrap_or(fallback),
                ClusterEndpoint {
                    address: sa.address.clone(),
                    port,
                    labels: md
                        .get("labels")
                        .and_then(|l| serde_json::from_value(l.clone()).ok())
                        .unwrap_or_default(),
                    locality: locality.clone(),
                    weight: e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
                    tls_mode: if tls.as_deref() == Some("istio") {
                        TlsMode::Istio
                    } else {
                        TlsMode::Disabled
                    },
                    identity: md
                        .get("identity")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                },
            ));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, e)| e).collect()
}
