//! Istio `PeerAuthentication` (security.istio.io): which mutual-TLS mode a
//! workload's inbound side accepts, for the whole workload and per port.
//!
//! This module holds the serde types, Istio's validation rules and the small
//! helpers that resolve a port's effective mode. It does not decide which
//! policy applies to which workload (mesh / namespace / selector precedence);
//! that belongs to the compiler.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::common::WorkloadSelector;
use crate::config::validate::{check_port, field, Issues, Validate};

/// The `spec` of a PeerAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads the policy applies to; unset means every workload of the
    /// namespace (or of the mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS settings for the workload; unset inherits from the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port mutual TLS settings keyed by the workload's port number (the
    /// container port, not the Service port). Only valid with a selector.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de_port_map",
        serialize_with = "ser_port_map"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, MutualTls>"))]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// Istio's `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// The mode; unset means `UNSET` (inherit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Istio's `PeerAuthentication.MutualTLS.Mode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent policy; with no parent, behaves as `PERMISSIVE`.
    #[default]
    Unset,
    /// Plaintext only: the connection is not tunneled through mTLS.
    Disable,
    /// Both plaintext and mTLS are accepted.
    Permissive,
    /// Only mTLS (with a client certificate) is accepted.
    Strict,
}

impl MtlsMode {
    /// The mode as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }

    /// This mode, or `parent` when this one is `UNSET`.
    pub fn or_inherit(self, parent: MtlsMode) -> MtlsMode {
        if self == MtlsMode::Unset {
            parent
        } else {
            self
        }
    }

    /// The mode actually enforced when nothing more specific is known:
    /// `UNSET` at the top of the hierarchy means `PERMISSIVE`.
    pub fn effective(self) -> MtlsMode {
        self.or_inherit(MtlsMode::Permissive)
    }

    /// True when plaintext callers are accepted (`PERMISSIVE`, `DISABLE`,
    /// and `UNSET` which falls back to `PERMISSIVE`).
    pub fn accepts_plaintext(self) -> bool {
        self.effective() != MtlsMode::Strict
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PeerAuthentication {
    /// The workload-level mode written in this policy (`UNSET` if absent).
    pub fn mode(&self) -> MtlsMode {
        self.mtls.and_then(|m| m.mode).unwrap_or_default()
    }

    /// The mode this policy sets for `port`: the port-level mode when it is
    /// set and not `UNSET`, else the workload-level mode (which may itself be
    /// `UNSET`, meaning "inherit from the namespace or mesh policy").
    pub fn mode_for_port(&self, port: u32) -> MtlsMode {
        self.port_level_mtls
            .get(&port)
            .and_then(|m| m.mode)
            .unwrap_or_default()
            .or_inherit(self.mode())
    }
}

impl Validate for PeerAuthentication {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(sel) = &self.selector {
            sel.validate(&field(path, "selector"), issues);
        }
        let plm = field(path, "portLevelMtls");
        if self.selector.is_none() && !self.port_level_mtls.is_empty() {
            issues.push(
                &plm,
                "portLevelMtls requires a selector: a mesh- or namespace-wide PeerAuthentication cannot set per-port modes; add selector.matchLabels for the workloads whose ports these are",
            );
        }
        for port in self.port_level_mtls.keys() {
            check_port(*port, &format!("{plm}.{port}"), issues);
        }
    }
}

/// Reads `portLevelMtls`, whose keys are port numbers written as YAML keys
/// (which arrive as strings), with an error that says what a key must be.
fn de_port_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    let raw = Option::<BTreeMap<String, MutualTls>>::deserialize(d)?.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let port: u32 = k.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "portLevelMtls key {k:?} is not a port number; use the workload's port number (1-65535) as the key"
            ))
        })?;
        out.insert(port, v);
    }
    Ok(out)
}

fn ser_port_map<S: Serializer>(map: &BTreeMap<u32, MutualTls>, s: S) -> Result<S::Ok, S::Error> {
    let as_strings: BTreeMap<String, &MutualTls> =
        map.iter().map(|(k, v)| (k.to_string(), v)).collect();
    as_strings.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> PeerAuthentication {
        serde_json::from_value(v).unwrap()
    }

    fn errors(pa: &PeerAuthentication) -> Vec<String> {
        let mut issues = Issues::new();
        pa.validate("spec", &mut issues);
        issues.errors().iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn parses_port_level_policy() {
        let pa = parse(json!({
            "selector": {"matchLabels": {"app": "finance"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": {}}
        }));
        assert_eq!(pa.mode(), MtlsMode::Strict);
        assert_eq!(pa.mode_for_port(8080), MtlsMode::Disable);
        assert_eq!(
            pa.mode_for_port(9090),
            MtlsMode::Strict,
            "UNSET port inherits"
        );
        assert_eq!(pa.mode_for_port(1), MtlsMode::Strict);
        assert!(errors(&pa).is_empty());
        // Round trip keeps the string keys.
        let back = serde_json::to_value(&pa).unwrap();
        assert_eq!(back["portLevelMtls"]["8080"]["mode"], "DISABLE");
        assert_eq!(parse(back), pa);
    }

    #[test]
    fn empty_spec_is_unset() {
        let pa = parse(json!({}));
        assert_eq!(pa.mode(), MtlsMode::Unset);
        assert_eq!(pa.mode().effective(), MtlsMode::Permissive);
        assert!(pa.mode().accepts_plaintext());
        assert!(!MtlsMode::Strict.accepts_plaintext());
        assert!(errors(&pa).is_empty());
    }

    #[test]
    fn rejects_unknown_fields_and_modes() {
        assert!(
            serde_json::from_value::<PeerAuthentication>(json!({"mtls": {"mod": "STRICT"}}))
                .is_err()
        );
        assert!(serde_json::from_value::<PeerAuthentication>(json!({"mTLS": {}})).is_err());
        assert!(
            serde_json::from_value::<PeerAuthentication>(json!({"mtls": {"mode": "strict"}}))
                .is_err()
        );
        let err = serde_json::from_value::<PeerAuthentication>(
            json!({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"http": {"mode": "STRICT"}}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a port number"), "{err}");
    }

    #[test]
    fn port_level_requires_selector() {
        let pa = parse(json!({"portLevelMtls": {"8080": {"mode": "DISABLE"}}}));
        assert_eq!(errors(&pa), vec!["spec.portLevelMtls"]);
    }

    #[test]
    fn port_keys_in_range() {
        let pa = parse(json!({
            "selector": {"matchLabels": {"app": "a"}},
            "portLevelMtls": {"0": {"mode": "DISABLE"}, "70000": {"mode": "STRICT"}}
        }));
        assert_eq!(
            errors(&pa),
            vec!["spec.portLevelMtls.0", "spec.portLevelMtls.70000"]
        );
    }

    #[test]
    fn selector_is_validated() {
        let pa = parse(json!({"selector": {"matchLabels": {"app": "*"}}}));
        assert_eq!(errors(&pa), vec!["spec.selector.matchLabels.app"]);
    }
}
