//! Compiling and encoding for one client identity: namespace, labels,
//! service account and the IPs its servers listen on. Nodes with the same
//! identity get the same resources, so meshd compiles once per identity
//! and shares the snapshot.

use std::collections::BTreeSet;

use mesh_core::authz::{self, Workload};
use mesh_core::compile::Compiler;
use mesh_core::model::Client;
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::node::NodeInfo;
use mesh_xds::server::Snapshot;

/// What decides a node's resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    /// Namespace (`default` when the node sends none).
    pub namespace: String,
    /// Labels, sorted.
    pub labels: Vec<(String, String)>,
    /// Service account.
    pub service_account: Option<String>,
    /// `INSTANCE_IPS`, which name its inbound listeners.
    pub instance_ips: Vec<String>,
}

impl ClientKey {
    /// The key of a node.
    pub fn of(info: &NodeInfo) -> Self {
        let client = info.client();
        Self {
            namespace: client.namespace,
            labels: client.labels.into_iter().collect(),
            service_account: client.service_account,
            instance_ips: info.instance_ips.clone(),
        }
    }

    /// The client to compile for.
    pub fn client(&self) -> Client {
        let mut c = Client::new(
            self.namespace.clone(),
            self.labels.iter().cloned().collect(),
        );
        c.service_account = self.service_account.clone();
        c
    }
}

/// Compiles and encodes the resources of one identity.
///
/// Server listeners: a gRPC server asks for
/// `xds.istio.io/grpc/lds/inbound/<ip>:<port>` with the address it bound,
/// so each inbound port gets a listener on the wildcard addresses and on
/// every instance IP.
pub fn snapshot(compiler: &Compiler, key: &ClientKey) -> Snapshot {
    let client = key.client();
    let model = compiler.compile(&client);
    let workload = Workload::new(key.namespace.clone(), client.labels.clone());
    let policies = authz::select(compiler.resources(), &model.mesh.root_namespace, &workload)
        .into_iter()
        .cloned()
        .collect();
    let ips: BTreeSet<&str> = ["0.0.0.0", "::"]
        .into_iter()
        .chain(key.instance_ips.iter().map(String::as_str))
        .collect();
    let inbound_addresses = model
        .inbound
        .ports
        .keys()
        .flat_map(|port| ips.iter().map(move |ip| (ip.to_string(), *port)))
        .collect();
    let resources = encode(
        &model,
        &EncodeOptions {
            inbound_addresses,
            authorization_policies: policies,
            ..EncodeOptions::default()
        },
    );
    Snapshot::from_resources(&resources)
}
