//! Workload auto-registration: a workload that connects with
//! WorkloadGroup-style node metadata becomes an endpoint (a synthesized
//! WorkloadEntry) of the services that select it, for as long as its xDS
//! stream is connected.
//!
//! Opt-in exactly as with istiod: the node must send `AUTO_REGISTER_GROUP`
//! (the WorkloadGroup name). istiod fills the WorkloadEntry from the group's
//! template and the proxy's metadata; since we read no WorkloadGroup
//! resource, the template's parts come from the node too:
//!
//! | WorkloadEntry field | node metadata |
//! |---|---|
//! | `address` | first of `INSTANCE_IPS` |
//! | `labels` | `LABELS` (selectors match these, `app` included) |
//! | namespace | `NAMESPACE` |
//! | `serviceAccount` | `SERVICE_ACCOUNT` |
//! | `network` | `NETWORK` |
//! | `locality` | `node.locality` (`region/zone/subzone`) |
//! | `ports` | `POD_PORTS`, Istio's JSON list `[{"name":"grpc","containerPort":50051}]` |
//!
//! The entry is named `<group>-<address>` like istiod names them.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_core::config::networking::WorkloadEntry;
use mesh_core::config::resource::{Kind, ObjectMeta, Origin, Resource, Spec};
use mesh_core::config::yaml::LineIndex;
use mesh_xds::node::{metadata_str, NodeInfo};
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::google::protobuf::Struct;
use serde::Deserialize;

/// The node metadata key that opts a workload into auto-registration.
pub const AUTO_REGISTER_GROUP: &str = "AUTO_REGISTER_GROUP";

/// A workload registered by its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The node id that registered it.
    pub node_id: String,
    /// The WorkloadGroup name.
    pub group: String,
    /// The synthesized WorkloadEntry.
    pub resource: Resource,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodPort {
    #[serde(default)]
    name: String,
    container_port: u32,
}

/// The registration a node asks for, or why it cannot have one. `Ok(None)`
/// when the node did not opt in.
pub fn registration(node: &Node) -> Result<Option<Registration>, String> {
    let empty = Struct::default();
    let md = node.metadata.as_ref().unwrap_or(&empty);
    let Some(group) = metadata_str(md, AUTO_REGISTER_GROUP) else {
        return Ok(None);
    };
    let info = NodeInfo::from_node(node);
    let namespace = info
        .namespace
        .clone()
        .ok_or_else(|| format!("node {} asks for auto-registration in group {group} but sends no NAMESPACE; add NAMESPACE to its node metadata", node.id))?;
    let address = info.instance_ips.first().cloned().ok_or_else(|| {
        format!(
            "node {} asks for auto-registration in group {group} but sends no INSTANCE_IPS; add the workload's IP to its node metadata",
            node.id
        )
    })?;
    let ports: BTreeMap<String, u32> = match metadata_str(md, "POD_PORTS") {
        Some(json) => serde_json::from_str::<Vec<PodPort>>(json)
            .map_err(|e| {
                format!(
                    "node {}: POD_PORTS is not Istio's JSON port list ({e}); expected [{{\"name\":\"grpc\",\"containerPort\":50051}}]",
                    node.id
                )
            })?
            .into_iter()
            .filter(|p| !p.name.is_empty())
            .map(|p| (p.name, p.container_port))
            .collect(),
        None => BTreeMap::new(),
    };
    let locality = node.locality.as_ref().and_then(|l| {
        let parts: Vec<&str> = [&l.region, &l.zone, &l.sub_zone]
            .into_iter()
            .map(String::as_str)
            .collect();
        let joined = parts.join("/");
        let trimmed = joined.trim_end_matches('/');
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    });
    let entry = WorkloadEntry {
        address: Some(address.clone()),
        ports,
        labels: info.labels.clone(),
        network: metadata_str(md, "NETWORK").map(str::to_string),
        locality,
        weight: None,
        service_account: info.service_account.clone(),
    };
    let name = format!(
        "{group}-{}",
        address.replace(['.', ':'], "-").trim_matches('-')
    );
    let resource = Resource {
        api_version: Kind::WorkloadEntry.current_api_version(),
        kind: Kind::WorkloadEntry,
        meta: ObjectMeta {
            name,
            namespace,
            labels: info.labels.clone(),
            annotations: Default::default(),
        },
        spec: Spec::WorkloadEntry(entry),
        origin: Origin {
            file: format!("<auto-registered by node {}>", node.id),
            document: 1,
            line: 1,
            prefix: String::new(),
            lines: Arc::new(LineIndex::default()),
        },
    };
    let errors = resource.validate();
    if !errors.is_empty() {
        return Err(format!(
            "node {}: the auto-registered WorkloadEntry is invalid: {}",
            node.id,
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(Some(Registration {
        node_id: node.id.clone(),
        group: group.to_string(),
        resource,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_xds::pb::envoy::config::core::v3::Locality;
    use mesh_xds::pb::google::protobuf::{value::Kind as PbKind, Value};

    fn s(v: &str) -> Value {
        Value {
            kind: Some(PbKind::StringValue(v.into())),
        }
    }

    fn node(md: &[(&str, &str)]) -> Node {
        let mut m = Struct::default();
        for (k, v) in md {
            m.fields.insert((*k).into(), s(v));
        }
        let mut labels = Struct::default();
        labels.fields.insert("app".into(), s("echo"));
        m.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(PbKind::StructValue(labels)),
            },
        );
        Node {
            id: "vm-1".into(),
            metadata: Some(m),
            locality: Some(Locality {
                region: "eu".into(),
                zone: "eu-1".into(),
                sub_zone: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn opt_in_fields_and_errors() {
        assert!(registration(&node(&[("NAMESPACE", "demo")]))
            .unwrap()
            .is_none());
        let r = registration(&node(&[
            ("AUTO_REGISTER_GROUP", "echo"),
            ("NAMESPACE", "demo"),
            ("INSTANCE_IPS", "10.0.0.7,fd00::7"),
            ("SERVICE_ACCOUNT", "echo-sa"),
            (
                "POD_PORTS",
                r#"[{"name":"grpc","containerPort":50051,"protocol":"TCP"}]"#,
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(r.resource.key(), "WorkloadEntry/demo/echo-10-0-0-7");
        let we = r.resource.workload_entry().unwrap();
        assert_eq!(we.address.as_deref(), Some("10.0.0.7"));
        assert_eq!(we.ports.get("grpc"), Some(&50051));
        assert_eq!(we.labels.get("app").map(String::as_str), Some("echo"));
        assert_eq!(we.locality.as_deref(), Some("eu/eu-1"));
        assert_eq!(we.service_account.as_deref(), Some("echo-sa"));

        let e = registration(&node(&[
            ("AUTO_REGISTER_GROUP", "echo"),
            ("NAMESPACE", "demo"),
        ]))
        .unwrap_err();
        assert!(e.contains("INSTANCE_IPS"), "{e}");
        let e = registration(&node(&[
            ("AUTO_REGISTER_GROUP", "echo"),
            ("NAMESPACE", "demo"),
            ("INSTANCE_IPS", "10.0.0.7"),
            ("POD_PORTS", "8080"),
        ]))
        .unwrap_err();
        assert!(e.contains("POD_PORTS"), "{e}");
    }
}
