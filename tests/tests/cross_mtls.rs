//! Mesh mTLS across implementations: a Node `@grpc/grpc-js-xds` client
//! calling a Python `grpcio` xDS server and the reverse, both configured
//! only by our control plane (SPIFFE principals checked by the server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_interop::mtls;
use mesh_interop::{Lang, Tool};

fn both() -> (Tool, Tool) {
    (
        Tool::find(Lang::Python).unwrap(),
        Tool::find(Lang::Node).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_to_python_server_over_mutual_tls() {
    let (py, node) = both();
    mtls::mutual_tls(&py, &node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_to_node_server_over_mutual_tls() {
    let (py, node) = both();
    mtls::mutual_tls(&node, &py).await.unwrap();
}
