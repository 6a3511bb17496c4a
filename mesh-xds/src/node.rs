//! The Istio metadata a client puts in `node.metadata`, and the
//! [`mesh_core::model::Client`] it describes (what the control plane
//! compiles a model for).
//!
//! Keys as Istio's agent and `istioctl`'s gRPC bootstrap write them:
//! `NAMESPACE`, `LABELS` (a struct of strings), `SERVICE_ACCOUNT`,
//! `CLUSTER_ID`, `MESH_ID`, `WORKLOAD_NAME`, `INSTANCE_IPS` (comma
//! separated). When `NAMESPACE` is missing it is taken from an Istio node id
//! (`type~ip~pod.namespace~namespace.svc.cluster.local`).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use mesh_core::config::common::Labels;
use mesh_core::model::Client;

/// What a node says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// `NAMESPACE`.
    pub namespace: Option<String>,
    /// `LABELS`.
    pub labels: Labels,
    /// `SERVICE_ACCOUNT`.
    pub service_account: Option<String>,
    /// `CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// `MESH_ID`.
    pub mesh_id: Option<String>,
    /// `WORKLOAD_NAME`.
    pub workload_name: Option<String>,
    /// `INSTANCE_IPS`.
    pub instance_ips: Vec<String>,
    /// A stock proxyless gRPC client (`GENERATOR: grpc` without our SDK's
    /// [`MESH_SDK`] key): it rejects a whole RouteConfiguration that holds
    /// a route kind gRPC does not implement, so those are left out for it.
    pub proxyless_grpc: bool,
    /// Which stock gRPC server it is, from `user_agent_name`, for what its
    /// RBAC can evaluate.
    pub stock_server: mesh_core::authz::StockServer,
}

/// Node metadata key our SDK's xDS client sets, so the control plane sends
/// it every route kind (it runs redirects and direct responses itself).
pub const MESH_SDK: &str = "MESH_SDK";

fn string(md: &Struct, key: &str) -> Option<String> {
    match md.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl NodeInfo {
    /// Reads a node.
    pub fn from_node(node: &Node) -> Self {
        let empty = Struct::default();
        let md = node.metadata.as_ref().unwrap_or(&empty);
        let labels = match md.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(s)) => s
                .fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
            _ => Labels::new(),
        };
        let namespace = string(md, "NAMESPACE").or_else(|| {
            // sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local
            let parts: Vec<&str> = node.id.split('~').collect();
            parts
                .get(2)
                .and_then(|p| p.split_once('.'))
                .map(|(_, ns)| ns.to_string())
                .filter(|ns| !ns.is_empty())
        });
        Self {
            id: node.id.clone(),
            namespace,
            labels,
            service_account: string(md, "SERVICE_ACCOUNT"),
            cluster_id: string(md, "CLUSTER_ID"),
            mesh_id: string(md, "MESH_ID"),
            workload_name: string(md, "WORKLOAD_NAME"),
            instance_ips: string(md, "INSTANCE_IPS")
                .map(|s| {
                    s.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            proxyless_grpc: string(md, "GENERATOR").as_deref() == Some("grpc")
                && !md.fields.contains_key(MESH_SDK),
            stock_server: mesh_core::authz::StockServer::from_user_agent(&node.user_agent_name),
        }
    }

    /// The client to compile for (`default` namespace when none is known).
    pub fn client(&self) -> Client {
        let mut c = Client::new(
            self.namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            self.labels.clone(),
        );
        c.service_account = self.service_account.clone();
        c
    }
}

/// The client a node describes.
pub fn client(node: &Node) -> Client {
    NodeInfo::from_node(node).client()
}
