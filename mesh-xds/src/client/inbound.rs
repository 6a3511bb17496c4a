//! What the server-side inbound listeners tell about the workload's
//! inbound policy, so an SDK server fed by xDS enforces what the control
//! plane decided: the same mTLS modes, AuthorizationPolicies,
//! RequestAuthentications and port protocols a local compile gives.
//!
//! Our encoder puts the whole compiled policy in each inbound listener's
//! `mesh` metadata (see `crate::inbound_policy` for the format and why it
//! is not read from the RBAC filters); it replaces the model's inbound
//! policy as a whole. One that does not decode is NACKed with its listener
//! ([`stated`] runs at validation): serving without the policies it names
//! would let through what they deny.
//!
//! Without it (another control plane, such as istiod):
//! - Authorization comes from the listeners' standard RBAC filters, decoded
//!   and enforced with Envoy's semantics per port
//!   ([`mesh_core::authz::PolicySet::from_rbac`]). A listener whose
//!   filters cannot be understood exactly denies its port (one error log
//!   line names the listener and why); it never serves without them.
//! - The mTLS mode is recovered from the chains as istiod's proxyless
//!   generator builds them: TLS chains only is STRICT, a TLS chain beside a
//!   plaintext one is PERMISSIVE, plaintext only is DISABLE (istiod's
//!   PERMISSIVE looks the same to a proxyless server, which then accepts
//!   plaintext either way); a listener of ours gives the mode its stated
//!   policy has for its port. Ports without a listener take the mode every
//!   listener agrees on, else PERMISSIVE (Istio's default).
//! - PeerAuthentication names, JWT rules and port protocols keep the base
//!   model's.
//!
//! No inbound listener at all (no Service selects the workload, so the
//! encoder sends none) keeps the base model's inbound policy: the policies
//! that select such a workload do not reach it over xDS.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_core::authz::{PolicySet, PortRbac, RbacPorts};
use mesh_core::model::{InboundPolicy, Model, MtlsMode, MtlsPolicy};

use crate::encode::parse_inbound_listener_name;
use crate::inbound_policy::{from_json, INBOUND_KEY};

/// The inbound policy a listener of ours states in its metadata; `None`
/// for listeners without one.
pub(super) fn stated(l: &Listener) -> Result<Option<InboundPolicy>, String> {
    let Some(md) = crate::decode::mesh_md(l.metadata.as_ref()) else {
        return Ok(None);
    };
    let Some(v) = md.get(INBOUND_KEY) else {
        return Ok(None);
    };
    from_json(v)
        .map(Some)
        .map_err(|e| format!("{}: {e}", l.name))
}

fn is_server_listener(l: &Listener) -> bool {
    l.api_listener.is_none() && parse_inbound_listener_name(&l.name).is_some()
}

/// Sets what the inbound listeners among `listeners` say into `model`:
/// the stated policy when one is (with the path normalization it was
/// compiled with, which the server applies before authorization), else the
/// mTLS modes the chains tell.
pub(super) fn apply<'a>(
    listeners: impl Iterator<Item = &'a Listener>,
    model: &mut Model,
) -> Result<(), String> {
    let server: Vec<&Listener> = listeners.filter(|l| is_server_listener(l)).collect();
    // Every listener of one workload carries the same policy; the first
    // (by name, as the state keeps them) stands for all.
    let names: Vec<String> = server.iter().map(|l| l.name.clone()).collect();
    for l in &server {
        if let Some(p) = stated(l)? {
            model.mesh.path_normalization = p.authz.normalization();
            model.inbound = p;
            model.inbound.listeners = names;
            return Ok(());
        }
    }
    if server.is_empty() {
        return Ok(());
    }
    model.inbound.listeners = names;
    model.inbound.authz = PolicySet::from_rbac(rbac_ports(&server), model.mesh.path_normalization);
    model.inbound.authz_policies = model
        .inbound
        .authz
        .rbac()
        .map(RbacPorts::policy_names)
        .unwrap_or_default();
    if let Some(mtls) = mtls_policy(server.into_iter()) {
        model.inbound.mtls = mtls;
    }
    Ok(())
}

/// Each server listener's RBAC, by port; one that cannot be understood
/// denies its port.
fn rbac_ports(server: &[&Listener]) -> RbacPorts {
    let mut ports = BTreeMap::new();
    for l in server {
        let Some((_, port)) = parse_inbound_listener_name(&l.name) else {
            continue;
        };
        let rbac = match crate::decode::listener_rbac(l) {
            Ok(filters) => PortRbac::Filters {
                listener: l.name.clone(),
                filters,
            },
            Err(reason) => {
                tracing::error!(
                    listener = %l.name,
                    "inbound listener RBAC not understood: {reason}; port {port} denies every request (response flag RBAC) until the server sends a policy the mesh can enforce"
                );
                PortRbac::Deny {
                    listener: l.name.clone(),
                    reason,
                }
            }
        };
        // Listeners on several addresses of one port: any that denies wins.
        match ports.get(&port) {
            Some(PortRbac::Deny { .. }) => {}
            Some(PortRbac::Filters { filters, .. }) if matches!(&rbac, PortRbac::Filters { filters: f, .. } if f == filters) =>
                {}
            Some(PortRbac::Filters { .. }) => {
                let reason =
                    "listeners on several addresses of this port carry different RBAC filters"
                        .to_string();
                tracing::error!(listener = %l.name, "{reason}; port {port} denies every request");
                ports.insert(
                    port,
                    PortRbac::Deny {
                        listener: l.name.clone(),
                        reason,
                    },
                );
            }
            None => {
                ports.insert(port, rbac);
            }
        }
    }
    RbacPorts::new(ports)
}

fn mode(l: &Listener, port: u16) -> Option<MtlsMode> {
    if let Ok(Some(p)) = stated(l) {
        return Some(p.mtls.mode_for(port));
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
    for l in listeners.filter(|l| is_server_listener(l)) {
        let Some((_, port)) = parse_inbound_listener_name(&l.name) else {
            continue;
        };
        let Some(m) = mode(l, port) else {
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
