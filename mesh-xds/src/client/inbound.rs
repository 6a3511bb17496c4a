//! What the server-side inbound listeners tell about the workload's mTLS
//! mode, so an SDK server fed by xDS enforces what the control plane
//! decided for its ports.
//!
//! Our encoder states the mode in the listener's `mesh` metadata; without
//! it (another control plane) the chains are read as istiod's proxyless
//! generator builds them: TLS chains only is STRICT, a TLS chain beside a
//! plaintext one is PERMISSIVE, plaintext only is DISABLE (istiod's
//! PERMISSIVE looks the same to a proxyless server, which then accepts
//! plaintext either way). Ports
//! without a listener take the mode every listener agrees on, else
//! PERMISSIVE (Istio's default); which PeerAuthentications decided it
//! (`sources`) is not carried over xDS and stays empty.
//!
//! Not recovered here: JWT rules and AuthorizationPolicies (the listeners'
//! RBAC filters are not decoded back into policies) and port protocols.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_core::model::{MtlsMode, MtlsPolicy};

use crate::encode::parse_inbound_listener_name;

fn mode(l: &Listener) -> Option<MtlsMode> {
    let stated = crate::decode::mesh_md(l.metadata.as_ref())
        .and_then(|md| md.get("mtls")?.as_str().map(str::to_string));
    match stated.as_deref() {
        Some("STRICT") => return Some(MtlsMode::Strict),
        Some("PERMISSIVE") => return Some(MtlsMode::Permissive),
        Some("DISABLE") => return Some(MtlsMode::Disable),
        _ => {}
    }
    let tls = l
        .filter_chains
        .iter()
        .filter(|c| c.transport_socket.is_some())
        .count();
    let plain = l.filter_chains.len() - tls;
    match (tls, plain) {
        (0, 0) => None,
        (_, 0) => Some(MtlsMode::Strict),
        (0, _) => Some(MtlsMode::Disable),
        _ => Some(MtlsMode::Permissive),
    }
}

/// The mTLS policy the inbound listeners describe; `None` when there are
/// none (the default policy stays).
pub(super) fn mtls_policy<'a>(listeners: impl Iterator<Item = &'a Listener>) -> Option<MtlsPolicy> {
    let mut policy = MtlsPolicy::default();
    for l in listeners.filter(|l| l.api_listener.is_none()) {
        let (Some((_, port)), Some(m)) = (parse_inbound_listener_name(&l.name), mode(l)) else {
            continue;
        };
        policy.ports.insert(port, m);
    }
    let first = *policy.ports.values().next()?;
    if policy.ports.values().all(|m| *m == first) {
        policy.mode = first;
    }
    // Port-level entries only where they differ, as a local compile has them.
    let mode = policy.mode;
    policy.ports.retain(|_, m| *m != mode);
    Some(policy)
}
