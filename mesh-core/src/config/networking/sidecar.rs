//! Istio Sidecar.

use serde::{Deserialize, Serialize};

use crate::config::validate::{Issues, Validate};

/// Sidecar (stub: replaced by the full type).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {}

impl Validate for Sidecar {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
