//! Peer metadata exchange, as Istio's sidecars do it over HTTP: the
//! client sends its workload metadata in `x-envoy-peer-metadata` (a
//! base64 `google.protobuf.Struct` with Istio's node metadata keys:
//! `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`, ...) and
//! `x-envoy-peer-metadata-id`; a server that got them answers with its
//! own. Each side learns who is at the other end (workload, app, version,
//! canonical service) for its metric labels, with SDK workloads and
//! Envoy sidecars alike. Both headers are taken off before the request
//! reaches the application and before the response reaches the caller.
//!
//! What a peer says about itself names labels only; it never authorizes
//! anything, and the principal always comes from the verified
//! certificate.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use prost_types::{value::Kind, Struct, Value};

use super::peer::{Peer, WorkloadInfo};
use crate::thread_cache::ThreadCache;

/// The header carrying the metadata.
pub static METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
/// The header carrying the node id.
pub static METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// The headers a workload sends about itself, encoded once.
#[derive(Debug, Clone)]
pub struct LocalMetadata {
    /// `x-envoy-peer-metadata`.
    pub metadata: HeaderValue,
    /// `x-envoy-peer-metadata-id`.
    pub id: HeaderValue,
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

impl LocalMetadata {
    /// Encodes `w` as Istio's node metadata.
    pub fn encode(w: &WorkloadInfo) -> LocalMetadata {
        let mut fields = BTreeMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                fields.insert(k.to_string(), string(v));
            }
        };
        put("NAMESPACE", w.namespace.as_deref());
        put("WORKLOAD_NAME", w.name.as_deref());
        put("CLUSTER_ID", w.cluster.as_deref());
        put("SERVICE_ACCOUNT", w.service_account.as_deref());
        let labels = w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), string(v)))
            .collect();
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        let bytes = Struct {
            fields: fields.into_iter().collect(),
        }
        .encode_to_vec();
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let id = format!(
            "sidecar~0.0.0.0~{}.{}~{}.svc.cluster.local",
            w.name.as_deref().unwrap_or("unknown"),
            w.namespace.as_deref().unwrap_or("default"),
            w.namespace.as_deref().unwrap_or("default"),
        );
        LocalMetadata {
            metadata: leaked(b64),
            id: leaked(id),
        }
    }

    /// Adds the headers to `headers`.
    pub fn insert(&self, headers: &mut HeaderMap) {
        headers.insert(METADATA.clone(), self.metadata.clone());
        headers.insert(METADATA_ID.clone(), self.id.clone());
    }
}

/// A header value over bytes that live as long as the process: a
/// workload encodes its metadata once (per mesh it builds), and a value
/// over static bytes is cloned onto every request without touching a
/// reference count the other threads share.
fn leaked(s: String) -> HeaderValue {
    let bytes = bytes::Bytes::from_static(Box::leak(s.into_bytes().into_boxed_slice()));
    // Base64 and the id's characters are valid header bytes.
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Decodes a peer's `x-envoy-peer-metadata`; `None` when it is not a
/// base64 protobuf Struct.
pub fn decode(value: &[u8]) -> Option<Arc<Peer>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let s = Struct::decode(bytes.as_slice()).ok()?;
    let text = |k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    };
    let labels = match s.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => l
            .fields
            .iter()
            .filter_map(|(k, v)| match &v.kind {
                Some(Kind::StringValue(v)) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        _ => Default::default(),
    };
    Some(Peer::of(&WorkloadInfo {
        name: text("WORKLOAD_NAME"),
        namespace: text("NAMESPACE"),
        labels,
        service_account: text("SERVICE_ACCOUNT"),
        cluster: text("CLUSTER_ID"),
        principal: None,
    }))
}

thread_local! {
    // A peer sends the same bytes on every request, so each thread keeps
    // the last few decodings.
    static DECODED: ThreadCache<HeaderValue, Option<Arc<Peer>>> = const { ThreadCache::new() };
}

/// Takes the exchange headers off `headers` and returns the peer they
/// describe (decoded once per distinct value per thread).
pub fn take(headers: &mut HeaderMap) -> Option<Arc<Peer>> {
    let value = headers.remove(&METADATA)?;
    headers.remove(&METADATA_ID);
    if let Some(hit) = DECODED.with(|c| c.find(|k, v| (*k == value).then(|| v.clone()))) {
        return hit;
    }
    let peer = decode(value.as_bytes());
    DECODED.with(|c| c.insert(value, peer.clone(), |_| true));
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_leaves_the_headers() {
        let w = WorkloadInfo {
            name: Some("productpage-v1".into()),
            namespace: Some("bookinfo".into()),
            labels: [("app", "productpage"), ("version", "v1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: Some("bookinfo-productpage".into()),
            cluster: Some("Kubernetes".into()),
            principal: None,
        };
        let local = LocalMetadata::encode(&w);
        let mut h = HeaderMap::new();
        local.insert(&mut h);
        let peer = take(&mut h).expect("decoded");
        assert!(h.is_empty(), "the exchange headers are removed");
        assert_eq!(&*peer.workload, "productpage-v1");
        assert_eq!(&*peer.namespace, "bookinfo");
        assert_eq!(&*peer.app, "productpage");
        assert_eq!(&*peer.canonical_revision, "v1");
        assert_eq!(&*peer.cluster, "Kubernetes");
        // The same bytes again come from the cache, as the same peer.
        local.insert(&mut h);
        assert!(Arc::ptr_eq(&take(&mut h).unwrap(), &peer));
        // Garbage is no peer, and is still removed.
        h.insert(METADATA.clone(), HeaderValue::from_static("!!not base64"));
        assert!(take(&mut h).is_none());
        assert!(h.is_empty());
    }
}
