//! The entry point a service uses: a builder, typed by where the config
//! comes from, that yields the compiled model for this workload and the
//! clients and servers built on it.
//!
//! Local mode compiles a directory of YAML in the process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_tower::source::SourceError> {
//! let mesh = mesh_tower::Mesh::local("mesh/")
//!     .namespace("default")
//!     .labels([("app", "productpage")])
//!     .build()
//!     .await?;
//! let model = mesh.current();
//! # let _ = model; Ok(()) }
//! ```
//!
//! Mesh mode takes the same options but gets the model from a control
//! plane over xDS (servers in priority order), and optionally the workload
//! certificate from the mesh CA:
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_tower::source::SourceError> {
//! use mesh_tower::CaOptions;
//! let mesh = mesh_tower::Mesh::xds(["http://127.0.0.1:15010"])
//!     .namespace("default")
//!     .labels([("app", "productpage")])
//!     .service_account("productpage")
//!     .xds_cache_file("/var/run/mesh/xds-cache.pb")
//!     .ca(CaOptions::new("127.0.0.1:15012", "meshd.mesh-system.svc", "/etc/mesh/root-cert.pem"))
//!     .build()
//!     .await?;
//! let client = mesh.http_client();
//! # let _ = client; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use mesh_ca::CertificateProvider;
use mesh_core::model::{Client, Model};

use crate::balance::{Endpoints, Resolve, SystemResolver};
use crate::client::{ClientLayer, ClientOptions};
use crate::grpc::GrpcChannel;
use crate::server::TlsSource;
#[cfg(feature = "xds")]
use crate::source::xds::XdsFeed;
use crate::source::{SourceStatus, Watcher};
use crate::telemetry::peer::DEFAULT_CLUSTER;
use crate::telemetry::{MeshMetrics, Telemetry, WorkloadInfo};
use crate::tls::TlsConnector;
use crate::ModelRx;

mod builder;
mod client;

#[cfg(feature = "xds")]
pub use builder::Xds;
pub use builder::{Local, MeshBuilder};
pub use client::{MeshClient, ResponseFuture};

/// The background work of a mesh: the config watcher (local mode), the
/// xDS clients (mesh mode) and certificate rotation. Dropped with its last
/// holder, which stops them.
#[derive(Default)]
struct Background {
    watcher: Option<Watcher>,
    #[cfg(feature = "xds")]
    xds: Option<XdsFeed>,
    certificates: Option<Arc<CertificateProvider>>,
}

/// Keeps a mesh's background work running. As tonic's `Channel` owns its
/// worker, every client, channel and server built from a [`Mesh`] holds
/// one, so config changes keep arriving and certificates keep rotating
/// while any of them is in use, even after the `Mesh` itself is dropped;
/// the work stops when the last holder goes. Take one with
/// [`Mesh::keep_alive`] for anything else built from [`Mesh::model`].
#[derive(Clone)]
pub struct MeshGuard(Arc<Background>);

impl std::fmt::Debug for MeshGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshGuard")
            .field("watcher", &self.0.watcher.is_some())
            .field("xds", &self.xds_running())
            .field("certificates", &self.0.certificates.is_some())
            .finish()
    }
}

/// A workload's view of the mesh: its identity and the live compiled model.
pub struct Mesh {
    client: Client,
    model: ModelRx,
    guard: MeshGuard,
    layer: ClientLayer,
    endpoints: Endpoints,
    identity: Option<TlsSource>,
    resolver: Arc<dyn Resolve>,
    workload: WorkloadInfo,
    telemetry: Telemetry,
    telemetry_on: bool,
}

impl Mesh {
    /// Local mode (the embedded default): the model is compiled in-process
    /// from a directory of Istio YAML, which is watched for changes.
    pub fn local(path: impl Into<PathBuf>) -> MeshBuilder<Local> {
        MeshBuilder::local(path.into())
    }

    /// Mesh mode: the model comes from a control plane over xDS (`meshd`,
    /// istiod, or any Envoy v3 ADS server), `servers` in priority order
    /// (`http://127.0.0.1:15010`); the next one is used while a server is
    /// unreachable, and the first again as soon as it is back. The builder
    /// takes the same identity options as local mode (sent as the node's
    /// Istio metadata) plus the xDS ones ([`MeshBuilder::xds_cache_file`],
    /// [`MeshBuilder::inbound_ports`], ...).
    #[cfg(feature = "xds")]
    pub fn xds<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> MeshBuilder<Xds> {
        MeshBuilder::xds(servers.into_iter().map(Into::into).collect())
    }

    /// A mesh over a model channel someone else feeds (tests, or an xDS client).
    pub fn from_model(client: Client, model: ModelRx) -> Self {
        Self::assemble(client, model, ClientOptions::default())
    }

    fn assemble(client: Client, model: ModelRx, options: ClientOptions) -> Self {
        let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver);
        let workload = WorkloadInfo {
            namespace: Some(client.namespace.clone()),
            labels: client.labels.clone(),
            service_account: client.service_account.clone(),
            cluster: Some(DEFAULT_CLUSTER.to_string()),
            ..WorkloadInfo::default()
        };
        Self::with_background(
            client,
            model,
            options,
            Background::default(),
            resolver,
            workload,
        )
    }

    fn with_background(
        client: Client,
        model: ModelRx,
        options: ClientOptions,
        background: Background,
        resolver: Arc<dyn Resolve>,
        workload: WorkloadInfo,
    ) -> Self {
        let telemetry = Telemetry::new(&workload, model.clone(), MeshMetrics::new());
        let layer = crate::client::layer(model.clone(), options).with_telemetry(telemetry.clone());
        let endpoints = secured_endpoints(&model, None, true, &resolver);
        Self {
            client,
            model,
            guard: MeshGuard(Arc::new(background)),
            layer,
            endpoints,
            identity: None,
            resolver,
            workload,
            telemetry,
            telemetry_on: true,
        }
    }

    /// Gives the mesh a workload identity: `http_client()` then originates
    /// mesh mTLS (auto-mTLS and `ISTIO_MUTUAL`) with its rotating
    /// certificate, and [`Mesh::identity`] hands it to the inbound server.
    /// `auto_mtls` is MeshConfig's `enableAutoMtls`. Clients taken before
    /// keep the previous connection pools.
    pub fn with_identity(mut self, identity: TlsSource, auto_mtls: bool) -> Self {
        self.endpoints = secured_endpoints(
            &self.model,
            Some(identity.clone()),
            auto_mtls,
            &self.resolver,
        );
        self.identity = Some(identity);
        // With a certificate the workload has a principal; telemetry
        // labels it from now on, into the same registry.
        if let Some(sa) = &self.client.service_account {
            let td = self.model.borrow().mesh.trust_domain.clone();
            self.workload.principal = Some(format!(
                "spiffe://{td}/ns/{}/sa/{sa}",
                self.client.namespace
            ));
            self.telemetry = Telemetry::new(
                &self.workload,
                self.model.clone(),
                self.telemetry.metrics().clone(),
            );
            if self.telemetry_on {
                self.layer = self.layer.clone().with_telemetry(self.telemetry.clone());
            }
        }
        self
    }

    /// Turns the stacks' telemetry layers on or off (clients taken before
    /// keep what they had).
    fn telemetry_enabled(mut self, on: bool) -> Self {
        self.telemetry_on = on;
        self.layer = if on {
            self.layer.clone().with_telemetry(self.telemetry.clone())
        } else {
            self.layer.clone().without_telemetry()
        };
        self
    }

    /// The workload's metrics registry: Istio's request metrics from the
    /// client and the server stacks, and anything the app registers. Serve
    /// it with [`MeshMetrics::handler`] at [`crate::telemetry::STATS_PATH`].
    pub fn metrics(&self) -> &MeshMetrics {
        self.telemetry.metrics()
    }

    /// The workload's telemetry (labels, access log switch, layers for
    /// stacks assembled by hand).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The workload certificate source, when the mesh has one (use it for
    /// the inbound [`crate::server::Server`]).
    pub fn identity(&self) -> Option<&TlsSource> {
        self.identity.as_ref()
    }

    /// The outbound HTTP client (HTTP/1.1, HTTP/2 and gRPC alike). Every
    /// client from one `Mesh` shares pools, balancer, outlier and retry state.
    pub fn http_client(&self) -> MeshClient {
        MeshClient {
            inner: tower::Layer::layer(&self.layer, self.endpoints.clone()),
            _guard: self.guard.clone(),
        }
    }

    /// A tonic channel to `authority` (`reviews.default.svc.cluster.local:9080`,
    /// or a short name resolved in this workload's namespace), for any
    /// generated tonic client: `ReviewsClient::new(mesh.grpc_channel(..)?)`.
    pub fn grpc_channel(
        &self,
        authority: &str,
    ) -> Result<GrpcChannel<MeshClient>, http::uri::InvalidUri> {
        Ok(GrpcChannel::new(self.http_client(), authority.parse()?))
    }

    /// An inbound server following this mesh's model and presenting
    /// `tls` (e.g. [`Mesh::tls_source`]); it keeps the mesh's background
    /// work running while it serves (see [`MeshGuard`]).
    pub fn server(&self, tls: crate::server::TlsSource) -> crate::server::Server {
        crate::server::Server::new(self.model(), tls)
            .layer(self.inbound_layer())
            .keep_alive(self.keep_alive())
    }

    /// The inbound stack [`Mesh::server`] uses: JWT, authorization and
    /// (unless turned off) telemetry from this mesh. Add a rate limit with
    /// `.with_rate_limit(..)` and hand it to `Server::layer`.
    pub fn inbound_layer(&self) -> crate::server::InboundLayer {
        let layer = crate::server::InboundLayer::new(self.model());
        if self.telemetry_on {
            layer.with_telemetry(self.telemetry.clone())
        } else {
            layer
        }
    }

    /// A handle that keeps this mesh's background work (config watcher,
    /// xDS clients, certificate rotation) running after the `Mesh` is
    /// dropped, for things built from [`Mesh::model`] by hand. Clients,
    /// channels and [`Mesh::server`] hold one already.
    pub fn keep_alive(&self) -> MeshGuard {
        self.guard.clone()
    }

    /// The endpoint stage shared by this mesh's clients (stats, ejections).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Who this workload is.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The live model channel the layers read.
    pub fn model(&self) -> ModelRx {
        self.model.clone()
    }

    /// The model right now.
    pub fn current(&self) -> Arc<Model> {
        Arc::clone(&self.model.borrow())
    }

    /// Applied/rejected counts and the last rejection, in local mode.
    pub fn source_status(&self) -> Option<SourceStatus> {
        self.guard.0.watcher.as_ref().map(Watcher::status)
    }

    /// Sync state with the control plane (connected server, ACKed versions,
    /// last NACK, last error), in mesh mode.
    #[cfg(feature = "xds")]
    pub fn xds_status(&self) -> Option<mesh_xds::client::XdsStatus> {
        self.guard.0.xds.as_ref().map(|f| f.main.status())
    }

    /// The workload certificate from the mesh CA, kept rotating, when
    /// `MeshBuilder::ca` was given: feed it to the inbound server
    /// ([`crate::server::accept::TlsSource::from_provider`]) and to client
    /// mTLS.
    pub fn certificates(&self) -> Option<&Arc<CertificateProvider>> {
        self.guard.0.certificates.as_ref()
    }

    /// The inbound server's certificate source, following rotations, when
    /// the mesh has an identity (same as [`Mesh::identity`], owned).
    pub fn tls_source(&self) -> Option<crate::server::TlsSource> {
        self.identity.clone()
    }
}

/// The endpoint stage over the TLS connector: DestinationRule TLS always,
/// mesh mTLS when there is an identity; host names through `resolver`.
fn secured_endpoints(
    model: &ModelRx,
    identity: Option<TlsSource>,
    auto_mtls: bool,
    resolver: &Arc<dyn Resolve>,
) -> Endpoints {
    let mut connector = TlsConnector::new()
        .model(model.clone())
        .auto_mtls(auto_mtls);
    if let Some(identity) = identity {
        connector = connector.identity(identity);
    }
    Endpoints::builder()
        .connector(connector)
        .resolver(resolver.clone())
        .model(model.clone())
        .build()
}

impl MeshGuard {
    fn xds_running(&self) -> bool {
        #[cfg(feature = "xds")]
        return self.0.xds.is_some();
        #[cfg(not(feature = "xds"))]
        false
    }
}
