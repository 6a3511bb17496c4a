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
    /// For a [`Client::router`], compilation sets it to the Gateways
    /// (`namespace/name`) whose selector selects the workload.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// True for a gateway workload (Istio's `router` proxy type): it serves
    /// the Gateways that select it, and is not a mesh workload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub router: bool,
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
            router: false,
            addresses: Vec::new(),
        }
    }

    /// A gateway workload (ingress or egress) in `namespace` with
    /// `labels`: the Gateways whose selector matches `labels` are what it
    /// serves, and VirtualServices bound to `mesh` do not apply to it.
    pub fn gateway(namespace: impl Into<String>, labels: Labels) -> Self {
        Self {
            gateways: Vec::new(),
            router: true,
            ..Self::new(namespace, labels)
        }
    }

    /// True when this client is a mesh workload (not only a gateway).
    pub fn is_mesh(&self) -> bool {
        (self.gateways.is_empty() && !self.router) || self.gateways.iter().any(|g| g == "mesh")
    }
}
