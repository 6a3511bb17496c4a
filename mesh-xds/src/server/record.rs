//! What each connected node holds, per type: the resources of the last
//! response sent and of the last one ACKed, with when. Streams (SotW and
//! Delta) write it; CSDS reads it. Records hold shared snapshots, not
//! copies of resources.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;

/// A set of resources a client was sent: name, resource version, resource.
pub(crate) trait Holdings: Debug + Send + Sync {
    /// The response's version (SotW `version_info`, Delta
    /// `system_version_info`).
    fn version(&self) -> &str;
    /// Calls `f` with every resource: name, its version, the resource.
    fn each(&self, f: &mut dyn FnMut(&str, &str, &Any));
}

/// One type on one node.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeRecord {
    pub(crate) sent: Option<(Arc<dyn Holdings>, SystemTime)>,
    pub(crate) acked: Option<(Arc<dyn Holdings>, SystemTime)>,
    pub(crate) nacked_at: Option<SystemTime>,
}

/// One connected node.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeRecord {
    /// The node as its stream sent it.
    pub(crate) node: Node,
    pub(crate) types: BTreeMap<String, TypeRecord>,
}

/// Resources held, by name: (resource version, resource).
pub(crate) fn collect(h: &dyn Holdings) -> BTreeMap<String, (String, Any)> {
    let mut out = BTreeMap::new();
    h.each(&mut |n, v, a| {
        out.insert(n.to_string(), (v.to_string(), a.clone()));
    });
    out
}
