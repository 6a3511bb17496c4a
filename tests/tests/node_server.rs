//! Stock Node `@grpc/grpc-js-xds` as a proxyless xDS *server* (gRFC A36)
//! of our control plane: an `XdsServer` with the bootstrap from `meshctl
//! bootstrap grpc`, its inbound listener and RBAC filters from an
//! AuthorizationPolicy, and a policy change pushed while it serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_interop::server_side;
use mesh_interop::{Lang, Tool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_xds_server_enforces_authorization_policy() {
    let node = Tool::find(Lang::Node).unwrap();
    server_side::authorization_policy(&node, &node)
        .await
        .unwrap();
}
