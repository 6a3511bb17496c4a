//! The inbound side under test: the model of the workload `app=server`
//! in `default`, an app that echoes what it received, and a mesh server
//! in front of it on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use mesh_ca::WorkloadCertificate;
use mesh_core::config::mesh_config::{NormalizationType, ProxyPathNormalization};
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use mesh_tower::body::{self, MeshBody};
use mesh_tower::server::{AcceptConfig, ConnectionInfo, PeerIdentity, Server, TlsSource};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Mesh settings with path normalization `norm`.
pub fn mesh_config(norm: NormalizationType) -> MeshConfig {
    MeshConfig {
        path_normalization: Some(ProxyPathNormalization {
            normalization: norm,
        }),
        ..MeshConfig::default()
    }
}

/// Compiles `yaml` for the workload `app=server` in `default`.
pub fn model_with(yaml: &str, mesh: &MeshConfig) -> Arc<Model> {
    let loaded = mesh_core::config::load_str(yaml, "t.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let labels = [("app".to_string(), "server".to_string())]
        .into_iter()
        .collect();
    Arc::new(mesh_core::compile::compile(
        &loaded.resources,
        mesh,
        &Client::new("default", labels),
    ))
}

/// [`model_with`] the default mesh settings.
pub fn model(yaml: &str) -> Arc<Model> {
    model_with(yaml, &MeshConfig::default())
}

/// A namespace-wide PeerAuthentication in `default` with mTLS `mode`.
pub fn peer_authn(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\n  namespace: default\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

/// The app: answers `path=`, `peer=` (the peer identity or `none`) and
/// `conn=` (whether connection info was there), one per line.
pub async fn echo(req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "none".into());
    let conn = req.extensions().get::<ConnectionInfo>().is_some();
    Ok(Response::new(body::full(format!(
        "path={path}\npeer={peer}\nconn={conn}\n"
    ))))
}

/// Starts a mesh server (port 8080 as far as policy goes) for `model`
/// presenting `cert`, in front of [`echo`]; returns its address and the
/// model sender.
pub async fn start(
    model: Arc<Model>,
    cert: WorkloadCertificate,
) -> (SocketAddr, watch::Sender<Arc<Model>>) {
    let (tx, rx) = watch::channel(model);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(rx, TlsSource::fixed(cert)).accept_config(AcceptConfig {
        port: Some(8080),
        ..AcceptConfig::default()
    });
    tokio::spawn(server.serve(listener, tower::service_fn(echo)));
    (addr, tx)
}
