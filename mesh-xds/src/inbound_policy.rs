//! The compiled inbound policy of a workload as it rides in its server-side
//! inbound listeners' `filter_metadata["mesh"]["inbound"]`, so an SDK server
//! fed by xDS enforces exactly what `Mesh::local` would compile for it.
//!
//! Why metadata beside the RBAC filters rather than decoding those filters:
//! RBAC is what stock gRPC servers read, and it is lossy for our SDK (no
//! JWT rules, no port protocols, no PeerAuthentication names, dry-run and
//! AUDIT policies left out, CUSTOM reduced to a decision gRPC cannot call).
//! Carrying the AuthorizationPolicy specs and recompiling them with the
//! same engine gives the same [`PolicySet`] by construction, while the RBAC
//! filters stay byte-for-byte what stock servers already accept.
//!
//! The JSON is that of mesh-core's model types (`MtlsPolicy`, `JwtPolicy`,
//! `Protocol`) plus, per policy, its `namespace/name`, dry-run flag and
//! spec; the path normalization the control plane compiled with comes
//! along, since it changes which paths match.

use std::collections::BTreeMap;

use mesh_core::authz::{CompiledPolicy, Normalization, PolicySet};
use mesh_core::config::kube::Protocol;
use mesh_core::config::security::authorization_policy::AuthorizationPolicy;
use mesh_core::model::{InboundPolicy, JwtPolicy, MtlsPolicy};
use serde::{Deserialize, Serialize};

/// Key of the inbound policy inside our listener metadata.
pub(crate) const INBOUND_KEY: &str = "inbound";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    mtls: MtlsPolicy,
    ports: BTreeMap<u16, Protocol>,
    jwt: Vec<JwtPolicy>,
    authz: WireAuthz,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAuthz {
    normalization: Normalization,
    policies: Vec<WirePolicy>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WirePolicy {
    /// `namespace/name`.
    name: String,
    dry_run: bool,
    spec: AuthorizationPolicy,
}

/// The JSON of `p` for listener metadata.
pub(crate) fn to_json(p: &InboundPolicy) -> serde_json::Value {
    let wire = Wire {
        mtls: p.mtls.clone(),
        ports: p.ports.clone(),
        jwt: p.jwt.clone(),
        authz: WireAuthz {
            normalization: p.authz.normalization(),
            policies: p
                .authz
                .policies()
                .iter()
                .map(|c| WirePolicy {
                    name: c.name.clone(),
                    dry_run: c.dry_run,
                    spec: c.spec().clone(),
                })
                .collect(),
        },
    };
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_value(wire).unwrap_or(serde_json::Value::Null)
}

/// The inbound policy from its metadata JSON, policies recompiled.
pub(crate) fn from_json(v: &serde_json::Value) -> Result<InboundPolicy, String> {
    let wire = Wire::deserialize(v).map_err(|e| format!("inbound policy metadata: {e}"))?;
    let policies = wire
        .authz
        .policies
        .iter()
        .map(|p| {
            let (ns, name) = p.name.split_once('/').ok_or_else(|| {
                format!(
                    "inbound policy metadata: policy {:?} is not namespace/name",
                    p.name
                )
            })?;
            Ok(CompiledPolicy::from_spec(ns, name, &p.spec, p.dry_run))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let authz = PolicySet::from_compiled(policies, wire.authz.normalization);
    Ok(InboundPolicy {
        mtls: wire.mtls,
        ports: wire.ports,
        jwt: wire.jwt,
        authz_policies: authz.policies().iter().map(|p| p.name.clone()).collect(),
        authz,
        listeners: Vec::new(),
    })
}
