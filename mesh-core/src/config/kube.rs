//! Kubernetes kinds (stub).

use serde::{Deserialize, Serialize};

use crate::config::validate::{Issues, Validate};

/// Service spec (stub).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceSpec {}
impl Validate for ServiceSpec {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
/// Pod spec (stub).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PodSpec {}
impl Validate for PodSpec {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
/// Controller spec (stub).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ControllerSpec {}
impl Validate for ControllerSpec {
    fn validate(&self, _path: &str, _issues: &mut Issues) {}
}
