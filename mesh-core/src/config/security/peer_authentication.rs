//! Istio PeerAuthentication.

use serde::{Deserialize, Serialize};

use crate::config::validate::{Issues, Validate};

/// PeerAuthentication (stub: replaced by the full type).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {}

impl Validate for PeerAuthentication {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
