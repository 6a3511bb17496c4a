//! Stock Node `@grpc/grpc-js-xds` xDS client and server with mesh mTLS (gRFC A29):
//! certificate providers from `meshctl bootstrap grpc --cert-dir`, SPIFFE
//! certificates from our CA, STRICT PeerAuthentication, ISTIO_MUTUAL
//! DestinationRule and a principal-based AuthorizationPolicy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_interop::mtls;
use mesh_interop::{Lang, Tool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mutual_tls_with_spiffe_principals() {
    let node = Tool::find(Lang::Node).unwrap();
    mtls::mutual_tls(&node, &node).await.unwrap();
}
