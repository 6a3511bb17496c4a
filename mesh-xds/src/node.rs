//! The Istio metadata a client puts in `node.metadata`: its one reader
//! ([`NodeInfo::from_node`]) and its one writer ([`NodeInfo::metadata`],
//! [`to_node`] for the SDK's xDS client, [`node_json`] for the bootstrap
//! `meshctl bootstrap grpc` writes for stock gRPC clients), and the
//! [`mesh_core::model::Client`] it describes (what the control plane
//! compiles a model for).
//!
//! Keys as Istio's agent and `istioctl`'s gRPC bootstrap write them:
//! `NAMESPACE`, `LABELS` (a struct of strings), `SERVICE_ACCOUNT`,
//! `CLUSTER_ID`, `MESH_ID`, `WORKLOAD_NAME`, `INSTANCE_IPS` (comma
//! separated), `GENERATOR: grpc` (asks istiod for the proxyless-gRPC
//! resource shapes: `api_listener` listeners, RDS, EDS). When `NAMESPACE`
//! is missing it is taken from an Istio node id
//! (`type~ip~pod.namespace~namespace.svc.cluster.local`).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use mesh_core::config::common::Labels;
use mesh_core::model::Client;
use serde_json::{json, Map, Value};

use crate::types::{json_to_struct, struct_to_json};

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
    /// Our SDK's xDS client (the node carries [`MESH_SDK`]): it takes
    /// resources only our SDK reads, such as the telemetry policy's
    /// listener (`crate::telemetry_policy`), which Envoy would NACK.
    pub mesh_sdk: bool,
    /// Which stock gRPC server it is, from `user_agent_name`, for what its
    /// RBAC can evaluate.
    pub stock_server: mesh_core::authz::StockServer,
}

/// Node metadata key our SDK's xDS client sets, so the control plane sends
/// it every route kind (it runs redirects and direct responses itself) and
/// the resources only our SDK reads (its telemetry policy).
pub const MESH_SDK: &str = "MESH_SDK";

fn string(md: &Struct, key: &str) -> Option<String> {
    metadata_str(md, key).map(str::to_string)
}

/// The non-empty string under `key` in node metadata `md`.
pub fn metadata_str<'a>(md: &'a Struct, key: &str) -> Option<&'a str> {
    match md.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
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
            mesh_sdk: md.fields.contains_key(MESH_SDK),
            stock_server: mesh_core::authz::StockServer::from_user_agent(&node.user_agent_name),
        }
    }

    /// The node metadata that says all this, as [`NodeInfo::from_node`]
    /// reads it back: Istio's keys, `GENERATOR: grpc`, and [`MESH_SDK`]
    /// unless the node is a stock [`NodeInfo::proxyless_grpc`] client.
    pub fn metadata(&self) -> Map<String, Value> {
        let mut md = Map::new();
        md.insert("GENERATOR".into(), json!("grpc"));
        if !self.proxyless_grpc {
            // Not a stock gRPC client: the control plane may send every
            // route kind.
            md.insert(MESH_SDK.into(), json!("true"));
        }
        let optional = [
            ("NAMESPACE", &self.namespace),
            ("SERVICE_ACCOUNT", &self.service_account),
            ("CLUSTER_ID", &self.cluster_id),
            ("MESH_ID", &self.mesh_id),
            ("WORKLOAD_NAME", &self.workload_name),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                md.insert(k.into(), json!(v));
            }
        }
        if !self.instance_ips.is_empty() {
            md.insert("INSTANCE_IPS".into(), json!(self.instance_ips.join(",")));
        }
        if !self.labels.is_empty() {
            md.insert("LABELS".into(), json!(self.labels));
        }
        md
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
        c.addresses = self.instance_ips.clone();
        c
    }
}

/// Istio's node id for a proxyless workload:
/// `sidecar~<ip>~<workload>.<namespace>~<namespace>.svc.cluster.local`.
pub fn default_node_id(info: &NodeInfo) -> String {
    let ns = info.namespace.as_deref().unwrap_or("default");
    let ip = info
        .instance_ips
        .first()
        .map_or("127.0.0.1", String::as_str);
    let name = info.workload_name.as_deref().unwrap_or("workload");
    format!("sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local")
}

/// The xDS node our SDK's client sends for `info`: its id (or
/// [`default_node_id`] when empty), [`NodeInfo::metadata`], `CLUSTER_ID` as
/// the cluster, and our user agent.
pub fn to_node(info: &NodeInfo) -> Node {
    Node {
        id: if info.id.is_empty() {
            default_node_id(info)
        } else {
            info.id.clone()
        },
        cluster: info.cluster_id.clone().unwrap_or_default(),
        metadata: Some(json_to_struct(&info.metadata())),
        user_agent_name: "mesh-xds".to_string(),
        ..Default::default()
    }
}

/// `node` as an xDS bootstrap file carries it (gRFC A27's `node`: `id`,
/// `cluster` when set, `locality`, `metadata`); the client that reads the
/// file adds its own user agent.
pub fn node_json(node: &Node) -> Value {
    let mut out = json!({
        "id": node.id,
        "locality": node.locality.as_ref().map_or_else(|| json!({}), |l| json!({
            "region": l.region, "zone": l.zone, "sub_zone": l.sub_zone,
        })),
        "metadata": node.metadata.as_ref().map_or_else(|| json!({}), struct_to_json),
    });
    if !node.cluster.is_empty() {
        out["cluster"] = json!(node.cluster);
    }
    out
}

/// The node a stock client sends for a bootstrap's [`node_json`] (id,
/// cluster and metadata; the locality and user agent are the client's).
pub fn node_from_json(v: &Value) -> Node {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Node {
        id: text("id"),
        cluster: text("cluster"),
        metadata: v["metadata"].as_object().map(json_to_struct),
        ..Default::default()
    }
}

/// The client a node describes.
pub fn client(node: &Node) -> Client {
    NodeInfo::from_node(node).client()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn info(proxyless_grpc: bool) -> NodeInfo {
        NodeInfo {
            id: String::new(),
            namespace: Some("bookinfo".into()),
            labels: [("app".to_string(), "productpage".to_string())]
                .into_iter()
                .collect(),
            service_account: Some("bookinfo-productpage".into()),
            cluster_id: Some("Kubernetes".into()),
            mesh_id: Some("cluster.local".into()),
            workload_name: Some("productpage-v1".into()),
            instance_ips: vec!["10.0.0.9".into(), "fd00::9".into()],
            proxyless_grpc,
            // What the metadata says: MESH_SDK unless a stock client.
            mesh_sdk: !proxyless_grpc,
            stock_server: Default::default(),
        }
    }

    #[test]
    fn reads_back_as_written() {
        let info = info(false);
        let node = to_node(&info);
        assert_eq!(
            node.id,
            "sidecar~10.0.0.9~productpage-v1.bookinfo~bookinfo.svc.cluster.local"
        );
        let md = node.metadata.as_ref().unwrap();
        assert_eq!(metadata_str(md, "GENERATOR"), Some("grpc"));
        assert_eq!(metadata_str(md, MESH_SDK), Some("true"));
        let back = NodeInfo::from_node(&node);
        assert_eq!(
            back,
            NodeInfo {
                id: node.id.clone(),
                ..info
            }
        );
    }

    #[test]
    fn a_bootstrap_node_reads_back_as_written() {
        // A stock client: no MESH_SDK, so it is read as proxyless gRPC.
        let info = NodeInfo {
            id: "sidecar~10.0.0.9~x.bookinfo~bookinfo.svc.cluster.local".into(),
            ..info(true)
        };
        let json = node_json(&to_node(&info));
        assert_eq!(json["metadata"]["LABELS"]["app"], "productpage");
        assert!(json.get("user_agent_name").is_none());
        let back = NodeInfo::from_node(&node_from_json(&json));
        assert_eq!(back, info);
    }
}
