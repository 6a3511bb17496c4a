//! The inbound policy of a workload: effective PeerAuthentication mode,
//! the RequestAuthentications and AuthorizationPolicies that select it, and
//! the protocol of each of its ports.
//!
//! PeerAuthentication inheritance is Istio's: workload-level (selector in
//! the workload's namespace) over namespace-level (no selector) over
//! mesh-level (root namespace, no selector); `UNSET` inherits from the next
//! level up; `portLevelMtls` is honoured only on workload-level policies; the
//! default without any policy is PERMISSIVE.

use std::collections::BTreeMap;

use crate::authz;
use crate::config::security::peer_authentication::{MtlsMode as ConfigMode, PeerAuthentication};
use crate::config::{Kind, Resource};
use crate::model::{Client, InboundPolicy, JwtPolicy, MtlsMode, MtlsPolicy};

use super::Compiler;

fn mode(m: Option<ConfigMode>) -> Option<MtlsMode> {
    match m? {
        ConfigMode::Unset => None,
        ConfigMode::Disable => Some(MtlsMode::Disable),
        ConfigMode::Permissive => Some(MtlsMode::Permissive),
        ConfigMode::Strict => Some(MtlsMode::Strict),
    }
}

/// The three PeerAuthentication levels that may apply to a workload, most
/// specific last.
pub fn peer_authn_chain<'a>(
    compiler: &'a Compiler,
    namespace: &str,
    labels: &crate::config::common::Labels,
) -> Vec<(&'a Resource, &'a PeerAuthentication)> {
    let root = &compiler.settings().root_namespace;
    let all: Vec<(&Resource, &PeerAuthentication)> = compiler
        .of_kind(Kind::PeerAuthentication)
        .filter_map(|r| r.peer_authentication().map(|p| (r, p)))
        .collect();
    let mesh = all
        .iter()
        .find(|(r, p)| &r.meta.namespace == root && p.selector.is_none());
    let ns = all
        .iter()
        .find(|(r, p)| r.meta.namespace == namespace && p.selector.is_none());
    let workload = all.iter().find(|(r, p)| {
        r.meta.namespace == namespace
            && p.selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && s.matches(labels))
    });
    [mesh, ns, workload]
        .into_iter()
        .flatten()
        .copied()
        .collect()
}

/// The effective mTLS policy of a workload.
pub fn mtls_policy(
    compiler: &Compiler,
    namespace: &str,
    labels: &crate::config::common::Labels,
) -> MtlsPolicy {
    let mut policy = MtlsPolicy::default();
    for (r, pa) in peer_authn_chain(compiler, namespace, labels) {
        if let Some(m) = mode(pa.mtls.as_ref().and_then(|m| m.mode)) {
            policy.mode = m;
        }
        policy.sources.push(r.ns_name());
        if pa.selector.is_some() {
            for (port, m) in &pa.port_level_mtls {
                let mode = mode(m.mode).unwrap_or(policy.mode);
                if let Ok(p) = u16::try_from(*port) {
                    policy.ports.insert(p, mode);
                }
            }
        }
    }
    policy
}

pub(super) fn build(compiler: &Compiler, client: &Client) -> InboundPolicy {
    let root = &compiler.settings().root_namespace;
    let applies = |r: &Resource, selector: Option<&crate::config::common::WorkloadSelector>| {
        (r.meta.namespace == client.namespace || &r.meta.namespace == root)
            && selector.is_none_or(|s| s.matches(&client.labels))
    };
    let jwt = compiler
        .of_kind(Kind::RequestAuthentication)
        .filter_map(|r| {
            let ra = r.request_authentication()?;
            // targetRef(s) bind to gateways/services, not to plain workloads.
            if !ra.target_refs.is_empty() || ra.target_ref.is_some() {
                return None;
            }
            applies(r, ra.selector.as_ref()).then(|| JwtPolicy {
                policy: r.ns_name(),
                rules: ra.jwt_rules.clone(),
            })
        })
        .collect();
    let mut ports = BTreeMap::new();
    for (port, p) in
        compiler
            .registry()
            .served_ports(&client.namespace, &client.labels, &client.addresses)
    {
        ports.entry(port).or_insert(p.protocol);
    }
    let workload = authz::Workload {
        namespace: client.namespace.clone(),
        labels: client.labels.clone(),
        targets: Vec::new(),
    };
    let compiled = authz::PolicySet::for_workload(
        compiler.resources(),
        root,
        &workload,
        compiler.settings().path_normalization,
    );
    InboundPolicy {
        mtls: mtls_policy(compiler, &client.namespace, &client.labels),
        ports,
        jwt,
        authz_policies: compiled.policies().iter().map(|p| p.name.clone()).collect(),
        authz: compiled,
        listeners: Vec::new(),
    }
}
