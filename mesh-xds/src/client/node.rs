//! The node this client sends: Istio's metadata keys, written the way
//! Istio's agent and `istioctl`'s gRPC bootstrap write them, so that
//! [`crate::node::NodeInfo::from_node`] (and istiod) read them back.
//! `GENERATOR: grpc` asks istiod for the proxyless-gRPC resource shapes
//! (`api_listener` listeners, RDS, EDS) this client decodes, rather than a
//! sidecar Envoy's.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::node::NodeInfo;

fn string(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_string())),
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

/// The xDS node for `info` (its id, or [`default_node_id`] when empty).
pub fn to_node(info: &NodeInfo) -> Node {
    let mut md = Struct::default();
    md.fields.insert("GENERATOR".into(), string("grpc"));
    // Not a stock gRPC client: the control plane may send every route kind.
    md.fields
        .insert(crate::node::MESH_SDK.into(), string("true"));
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            md.fields.insert(k.to_string(), string(v));
        }
    };
    put("NAMESPACE", &info.namespace);
    put("SERVICE_ACCOUNT", &info.service_account);
    put("CLUSTER_ID", &info.cluster_id);
    put("MESH_ID", &info.mesh_id);
    put("WORKLOAD_NAME", &info.workload_name);
    if !info.instance_ips.is_empty() {
        md.fields
            .insert("INSTANCE_IPS".into(), string(&info.instance_ips.join(",")));
    }
    if !info.labels.is_empty() {
        let labels = Struct {
            fields: info
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), string(v)))
                .collect(),
        };
        md.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
    }
    Node {
        id: if info.id.is_empty() {
            default_node_id(info)
        } else {
            info.id.clone()
        },
        cluster: info.cluster_id.clone().unwrap_or_default(),
        metadata: Some(md),
        user_agent_name: "mesh-xds".to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_as_written() {
        let info = NodeInfo {
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
            proxyless_grpc: false,
            stock_server: Default::default(),
        };
        let node = to_node(&info);
        assert_eq!(
            node.id,
            "sidecar~10.0.0.9~productpage-v1.bookinfo~bookinfo.svc.cluster.local"
        );
        let md = node.metadata.as_ref().unwrap();
        assert_eq!(
            md.fields["GENERATOR"].kind,
            Some(Kind::StringValue("grpc".into()))
        );
        let back = NodeInfo::from_node(&node);
        assert_eq!(
            back,
            NodeInfo {
                id: node.id.clone(),
                ..info
            }
        );
    }
}
