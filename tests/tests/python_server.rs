//! Stock Python `grpcio` as a proxyless xDS *server* (gRFC A36) of our
//! control plane: `grpc.server(xds=True)` with the bootstrap from `meshctl
//! bootstrap grpc`, its inbound listener and RBAC filters from an
//! AuthorizationPolicy, and a policy change pushed while it serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_interop::server_side;
use mesh_interop::{Lang, Tool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_xds_server_enforces_authorization_policy() {
    let py = Tool::find(Lang::Python).unwrap();
    server_side::authorization_policy(&py, &py).await.unwrap();
}
