//! The on-disk cache of the last published resources, so a workload that
//! restarts while the control plane is down serves its last config.
//!
//! Format: one protobuf `DiscoveryResponse` whose `version_info` is a
//! format marker and whose `resources` are the listeners, route
//! configurations, clusters and load assignments as `Any`. It is written to
//! a temporary file beside the target and renamed over it, so a reader sees
//! the old file or the new one, never half of one. A file that does not
//! decode, or whose resources do not, is reported and not used.

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::encode::Resources;
use crate::types::{self, any, unany};

const MARKER: &str = "mesh-xds-cache/v1";

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing the file failed.
    #[error("xDS cache {path}: {source}")]
    Io {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a cache we wrote, or is damaged.
    #[error("xDS cache {path} is corrupt ({why}); it is ignored and will be rewritten on the next update")]
    Corrupt {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

pub(super) fn encode_cache(r: &Resources) -> Vec<u8> {
    let resources: Vec<Any> = r
        .listeners
        .iter()
        .map(any)
        .chain(r.routes.iter().map(any))
        .chain(r.clusters.iter().map(any))
        .chain(r.endpoints.iter().map(any))
        .collect();
    DiscoveryResponse {
        version_info: MARKER.to_string(),
        resources,
        ..Default::default()
    }
    .encode_to_vec()
}

pub(super) fn decode_cache(bytes: &[u8]) -> Result<Resources, String> {
    let resp = DiscoveryResponse::decode(bytes).map_err(|e| e.to_string())?;
    if resp.version_info != MARKER {
        return Err(format!("format marker {:?}", resp.version_info));
    }
    let mut r = Resources::default();
    for (i, a) in resp.resources.iter().enumerate() {
        let bad = || format!("resource #{i} ({}) does not decode", a.type_url);
        match a.type_url.as_str() {
            types::LISTENER => r.listeners.push(unany::<Listener>(a).ok_or_else(bad)?),
            types::ROUTE => r
                .routes
                .push(unany::<RouteConfiguration>(a).ok_or_else(bad)?),
            types::CLUSTER => r.clusters.push(unany::<Cluster>(a).ok_or_else(bad)?),
            types::ENDPOINT => r
                .endpoints
                .push(unany::<ClusterLoadAssignment>(a).ok_or_else(bad)?),
            other => return Err(format!("resource #{i} has unknown type {other}")),
        }
    }
    // The same checks as a response from the control plane.
    crate::decode::decode(&r).map_err(|e| e.to_string())?;
    Ok(r)
}

/// Writes `resources` to `path` atomically (temp file, then rename).
pub async fn write_cache(path: &Path, resources: &Resources) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, encode_cache(resources))
        .await
        .map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)
}

/// Reads the cache at `path`; `Ok(None)` when there is none.
pub async fn load_cache(path: &Path) -> Result<Option<Resources>, CacheError> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    decode_cache(&bytes)
        .map(Some)
        .map_err(|why| CacheError::Corrupt {
            path: path.to_path_buf(),
            why,
        })
}
