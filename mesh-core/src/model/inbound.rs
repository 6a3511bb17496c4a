//! The inbound half of a model: how a workload accepts connections (mTLS
//! mode per port) and which requests it lets through (JWT rules and
//! authorization policies).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::authz::PolicySet;
use crate::config::kube::Protocol;
use crate::config::security::request_authentication::JwtRule;

/// PeerAuthentication's mTLS mode after inheritance is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// mTLS required; plaintext refused.
    Strict,
    /// mTLS and plaintext both accepted on the same port (Istio's default).
    Permissive,
    /// Plaintext only.
    Disable,
}

/// The effective mTLS policy of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtlsPolicy {
    /// Mode for ports without a port-level override.
    pub mode: MtlsMode,
    /// Port-level overrides (`portLevelMtls`, by workload port).
    pub ports: BTreeMap<u16, MtlsMode>,
    /// The PeerAuthentications that decided it, most specific last (`ns/name`).
    pub sources: Vec<String>,
}

impl MtlsPolicy {
    /// The mode for a port.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

impl Default for MtlsPolicy {
    fn default() -> Self {
        Self {
            mode: MtlsMode::Permissive,
            ports: BTreeMap::new(),
            sources: Vec::new(),
        }
    }
}

/// The JWT rules of one RequestAuthentication that applies to the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtPolicy {
    /// `ns/name` of the RequestAuthentication.
    pub policy: String,
    /// Its rules.
    pub rules: Vec<JwtRule>,
}

/// Policy for requests a workload receives.
#[derive(Debug, Clone, Serialize)]
pub struct InboundPolicy {
    /// mTLS mode per port.
    pub mtls: MtlsPolicy,
    /// Protocol of each workload port, from the Services that select it.
    pub ports: BTreeMap<u16, Protocol>,
    /// RequestAuthentications that apply.
    pub jwt: Vec<JwtPolicy>,
    /// AuthorizationPolicies that apply, compiled.
    #[serde(skip)]
    pub authz: PolicySet,
    /// Names of the AuthorizationPolicies that apply (`ns/name`), for display.
    pub authz_policies: Vec<String>,
    /// The server listeners this policy was read from, when it came over
    /// xDS; empty when compiled here (or when no listener said anything).
    #[serde(skip)]
    pub listeners: Vec<String>,
}
