//! Istio RequestAuthentication.

use serde::{Deserialize, Serialize};

use crate::config::validate::{Issues, Validate};

/// RequestAuthentication (stub: replaced by the full type).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {}

impl Validate for RequestAuthentication {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
