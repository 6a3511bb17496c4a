//! Istio ServiceEntry.

use serde::{Deserialize, Serialize};

use crate::config::validate::{Issues, Validate};

/// ServiceEntry (stub: replaced by the full type).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {}

impl Validate for ServiceEntry {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
