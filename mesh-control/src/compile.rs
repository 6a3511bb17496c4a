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
use mesh_xds::pb::envoy::config::cluster::v3::Cluster;
use mesh_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_xds::pb::envoy::config::listener::v3::Listener;
use mesh_xds::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_xds::pb::google::protobuf::Any;
use mesh_xds::server::Snapshot;
use mesh_xds::types::{self, unany};

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

/// True when two encodings of a resource carry the same message. Bytes can
/// differ for equal messages: protobuf maps (metadata `Struct`s) encode in
/// hash order, which changes from one encoding to the next.
fn same_resource(type_url: &str, a: &Any, b: &Any) -> bool {
    fn eq<T: prost::Message + prost::Name + Default + PartialEq>(a: &Any, b: &Any) -> bool {
        match (unany::<T>(a), unany::<T>(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
    a == b
        || (a.type_url == b.type_url
            && match type_url {
                types::LISTENER => eq::<Listener>(a, b),
                types::ROUTE => eq::<RouteConfiguration>(a, b),
                types::CLUSTER => eq::<Cluster>(a, b),
                types::ENDPOINT => eq::<ClusterLoadAssignment>(a, b),
                _ => false,
            })
}

/// `next` with every resource that means the same as in `prev` replaced
/// by `prev`'s bytes, and whether nothing changed at all.
///
/// Done once per client identity, this keeps the per-node comparison in
/// the snapshot cache a byte compare for unchanged resources, instead of
/// decoding them again for every node of that identity; and when nothing
/// changed, the nodes are not touched at all.
pub fn stabilize(prev: &Snapshot, next: Snapshot) -> (Snapshot, bool) {
    let mut out = Snapshot::new();
    let mut unchanged = prev.type_urls().count() == next.type_urls().count();
    for type_url in next.type_urls() {
        let fresh = next.resources(type_url).cloned().unwrap_or_default();
        let old = prev.resources(type_url);
        unchanged &= old.is_some_and(|o| o.len() == fresh.len());
        let merged: Vec<(String, Any)> = fresh
            .into_iter()
            .map(|(name, res)| match old.and_then(|o| o.get(&name)) {
                Some(o) if same_resource(type_url, o, &res) => (name, o.clone()),
                _ => {
                    unchanged = false;
                    (name, res)
                }
            })
            .collect();
        out.set_type(type_url, merged);
    }
    (out, unchanged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::config::load::load_str;
    use mesh_core::config::MeshConfig;

    fn compiler(timeout: &str) -> Compiler {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: demo}}\nspec:\n  selector: {{app: a}}\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: demo}}\nspec:\n  selector: {{app: b}}\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a, namespace: demo}}\nspec:\n  hosts: [a]\n  http:\n  - timeout: {timeout}\n    route: [{{destination: {{host: a}}}}]\n"
        );
        let res = load_str(&yaml, "t.yaml").into_result().unwrap();
        Compiler::new(res, MeshConfig::default())
    }

    fn key() -> ClientKey {
        ClientKey {
            namespace: "demo".into(),
            labels: vec![("app".into(), "client".into())],
            service_account: None,
            instance_ips: vec![],
        }
    }

    #[test]
    fn stabilize_keeps_old_bytes_for_unchanged_resources() {
        let first = snapshot(&compiler("5s"), &key());
        let again = snapshot(&compiler("5s"), &key());
        let (_, unchanged) = stabilize(&first, again);
        assert!(unchanged);

        let changed = snapshot(&compiler("7s"), &key());
        let (merged, unchanged) = stabilize(&first, changed.clone());
        assert!(!unchanged);
        let routes = merged.resources(types::ROUTE).unwrap();
        let a = "outbound|80||a.demo.svc.cluster.local";
        let b = "outbound|80||b.demo.svc.cluster.local";
        // The changed route has the new bytes, the untouched one the old.
        assert_eq!(routes[a], changed.resources(types::ROUTE).unwrap()[a]);
        assert_eq!(routes[b], first.resources(types::ROUTE).unwrap()[b]);
        assert_eq!(
            merged.resources(types::CLUSTER),
            first.resources(types::CLUSTER)
        );
    }
}
