//! Who a model is compiled for.

use serde::{Deserialize, Serialize};

use crate::config::common::Labels;

/// The workload a model is compiled for, as its node metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Client {
    /// Namespace of the workload.
    pub namespace: String,
    /// Labels of the workload (used by `sourceLabels`, selectors).
    #[serde(default)]
    pub labels: Labels,
    /// Kubernetes service account, when known.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Gateways the workload serves as; sidecars and SDK clients are `mesh`.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// The workload's own addresses (`INSTANCE_IPS`): a service whose
    /// endpoint is one of them, with no selector (a ServiceEntry's inline
    /// endpoint), is served by this workload, as istiod matches proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

impl Client {
    /// A mesh workload in `namespace` with `labels`.
    pub fn new(namespace: impl Into<String>, labels: Labels) -> Self {
        Self {
            namespace: namespace.into(),
            labels,
            service_account: None,
            gateways: vec!["mesh".to_string()],
            addresses: Vec::new(),
        }
    }

    /// True when this client is a mesh workload (not only a gateway).
    pub fn is_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh")
    }
}
