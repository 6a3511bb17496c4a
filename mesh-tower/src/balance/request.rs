//! Per-request helpers of the endpoint stage: the consistent-hash key,
//! the upstream protocol and the URI rewrite.

use std::net::{IpAddr, SocketAddr};

use http::uri::Authority;
use http::{Request, Uri, Version};
use mesh_core::lb::{hash_key, HashSource};
use mesh_core::model::Cluster;

use super::cluster::Proto;
use crate::{MeshBody, MeshError, ResponseFlag};

/// Request extension: the downstream client's IP, hashed by
/// `consistentHash.useSourceIp` (set by servers, gateways and the shim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceIp(pub IpAddr);

/// Which pool a request goes to.
pub(crate) fn choose_proto<B>(cluster: &Cluster, req: &Request<B>) -> Proto {
    use mesh_core::config::networking::destination_rule::H2UpgradePolicy;
    let http = cluster
        .policy
        .connection_pool
        .as_ref()
        .and_then(|c| c.http.as_ref());
    if cluster.protocol.is_http2() || crate::error::is_grpc(req) {
        return Proto::Http2;
    }
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        return if req.version() == Version::HTTP_2 {
            Proto::Http2
        } else {
            Proto::Http1
        };
    }
    if http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade) {
        return Proto::Http2;
    }
    Proto::Http1
}

/// Puts the request's URI in the form its connection needs: HTTP/1.1
/// sends the path (authority-form for CONNECT), with the `Host` header
/// already naming the authority the client asked for; HTTP/2 sends the
/// endpoint address as `:authority`.
pub(crate) fn prepare(
    req: &mut Request<MeshBody>,
    addr: SocketAddr,
    authority: Option<Authority>,
    proto: Proto,
) -> Result<(), MeshError> {
    let bad = |e: &dyn std::fmt::Display| {
        MeshError::new(
            ResponseFlag::NoHealthyUpstream,
            format!("cannot build the upstream URI for {addr}: {e}"),
        )
    };
    let endpoint = |authority: Option<Authority>| match authority {
        Some(a) => Ok(a),
        None => addr.to_string().parse::<Authority>().map_err(|e| bad(&e)),
    };
    // Taken apart rather than cloned: the new URI reuses the old one's
    // bytes without touching their reference count again.
    let old = std::mem::take(req.uri_mut()).into_parts();
    let mut parts = http::uri::Parts::default();
    if req.method() == http::Method::CONNECT && proto == Proto::Http1 {
        parts.authority = Some(match old.authority {
            Some(a) => a,
            None => endpoint(authority)?,
        });
    } else {
        parts.path_and_query = Some(
            old.path_and_query
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        if proto == Proto::Http2 {
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(endpoint(authority)?);
        }
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| bad(&e))?;
    *req.version_mut() = match proto {
        Proto::Http1 => Version::HTTP_11,
        Proto::Http2 => Version::HTTP_2,
    };
    Ok(())
}

/// The request's consistent-hash key and, for a generated cookie, the
/// `Set-Cookie` value for the response.
pub(crate) fn request_hash<B>(
    src: &HashSource,
    req: &Request<B>,
    unique: u64,
) -> (Option<u64>, Option<String>) {
    match src {
        HashSource::Header(name) => {
            let vals: Vec<&str> = req
                .headers()
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if vals.is_empty() {
                (None, None)
            } else {
                (Some(hash_key::hash_key(vals.join(",").as_bytes())), None)
            }
        }
        HashSource::Cookie {
            name,
            path,
            ttl,
            attributes,
        } => {
            let found = req
                .headers()
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|h| hash_key::find_cookie(h, name));
            match (found, ttl) {
                (Some(v), _) => (Some(hash_key::hash_key(v.as_bytes())), None),
                (None, Some(ttl)) => {
                    let (value, set) = hash_key::generate_cookie(
                        name,
                        &unique.to_le_bytes(),
                        path.as_deref(),
                        *ttl,
                        attributes,
                    );
                    (Some(hash_key::hash_key(value.as_bytes())), Some(set))
                }
                (None, None) => (None, None),
            }
        }
        HashSource::SourceIp => {
            let ip = req
                .extensions()
                .get::<SourceIp>()
                .map(|s| s.0.to_string())
                .unwrap_or_else(|| "local".to_string());
            (Some(hash_key::hash_key(ip.as_bytes())), None)
        }
        HashSource::QueryParameter(name) => (
            req.uri()
                .query()
                .and_then(|q| hash_key::find_query_param(q, name))
                .map(|v| hash_key::hash_key(v.as_bytes())),
            None,
        ),
    }
}
