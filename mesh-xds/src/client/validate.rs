//! The checks a response's resources pass before they are accepted (the
//! same for SotW and Delta): they decode as their type, appear once, and
//! decode into the model's terms with [`crate::decode`].

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;

use crate::decode::{decode_cluster, decode_listener, decode_route_configuration};
use crate::telemetry_policy::{decode_telemetry_listener, is_telemetry_listener};
use crate::types::unany;

/// Every `Any` as a `T`.
pub(super) fn decode_all<'a, T: prost::Message + prost::Name + Default>(
    resources: impl IntoIterator<Item = &'a Any>,
) -> Result<Vec<T>, String> {
    resources
        .into_iter()
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

/// No name twice in one response.
pub(super) fn no_duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("{n}: sent twice in one response"));
        }
    }
    Ok(())
}

/// Listeners split into client-side ones (with the route config each
/// names) and the others: server-side inbound ones (for gRPC servers and
/// the inbound mTLS mode; not part of the outbound model) and the
/// telemetry policy's carrier (`crate::telemetry_policy`).
pub(super) type SplitListeners = (Vec<(Listener, String)>, Vec<Listener>);

/// Checks and splits listeners.
pub(super) fn listeners(all: Vec<Listener>) -> Result<SplitListeners, String> {
    no_duplicates(all.iter().map(|l| l.name.as_str()))?;
    let (client, inbound): (Vec<Listener>, Vec<Listener>) =
        all.into_iter().partition(|l| l.api_listener.is_some());
    let client = client
        .into_iter()
        .map(|l| {
            let route = decode_listener(&l)
                .map_err(|e| e.to_string())?
                .route_config_name;
            Ok((l, route))
        })
        .collect::<Result<_, String>>()?;
    for l in &inbound {
        if is_telemetry_listener(l) {
            // A policy this build cannot run is refused with the response,
            // so the last good one keeps serving.
            decode_telemetry_listener(l).map_err(|e| e.to_string())?;
        } else {
            super::inbound::stated(l)?;
        }
    }
    Ok((client, inbound))
}

/// Route configurations decode.
pub(super) fn routes(all: &[RouteConfiguration]) -> Result<(), String> {
    no_duplicates(all.iter().map(|r| r.name.as_str()))?;
    for rc in all {
        decode_route_configuration(rc).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Clusters decode.
pub(super) fn clusters(all: &[Cluster]) -> Result<(), String> {
    no_duplicates(all.iter().map(|c| c.name.as_str()))?;
    for c in all {
        decode_cluster(c, None).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Load assignments name their cluster.
pub(super) fn endpoints(all: &[ClusterLoadAssignment]) -> Result<(), String> {
    no_duplicates(all.iter().map(|c| c.cluster_name.as_str()))?;
    if all.iter().any(|c| c.cluster_name.is_empty()) {
        return Err("a ClusterLoadAssignment without cluster_name".into());
    }
    Ok(())
}
