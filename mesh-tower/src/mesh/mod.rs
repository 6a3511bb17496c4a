//! The entry point a service uses: one builder that yields the compiled
//! model for this workload and the clients and servers built on it.
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
//! use mesh_tower::source::xds::CaOptions;
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

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::client::call::CallRef;

use crate::body::{boxed, BoxError, MeshBody};

use mesh_core::config::common::Labels;
use mesh_core::model::{Client, Model};

use crate::balance::{Endpoints, Resolve, SystemResolver};
use crate::client::{ClientLayer, ClientOptions, ClientService};
use crate::grpc::GrpcChannel;
use crate::server::TlsSource;
use crate::source::xds::{start_identity, start_xds, CaOptions, XdsFeed, XdsSource, XdsTuning};
use crate::source::{watch_local, LocalSource, SourceError, SourceStatus, Watcher};
use crate::tls::TlsConnector;
use crate::ModelRx;
use mesh_ca::CertificateProvider;
use mesh_core::config::load::load_mesh_config;
use mesh_core::config::MeshConfig;
use mesh_xds::client::{XdsClientConfig, XdsStatus};

/// The outbound HTTP client of a workload, running the whole client stack
/// (routing, splits, retries, timeouts, faults, mirrors, load balancing,
/// outlier detection, connection-pool limits). Clone it freely: clones
/// share connection pools, balancer and outlier state, and retry budgets.
///
/// Use [`MeshClient::request`], or it as a `tower::Service` for any
/// `http::Request<B>` whose body yields `Bytes`. Its future is a named,
/// `Send + 'static` type, so it can be awaited inside `tokio::spawn`.
#[derive(Clone)]
pub struct MeshClient {
    inner: ClientService<Endpoints>,
    _guard: MeshGuard,
}

/// The background work of a mesh: the config watcher (local mode), the
/// xDS clients (mesh mode) and certificate rotation. Dropped with its last
/// holder, which stops them.
#[derive(Default)]
struct Background {
    watcher: Option<Watcher>,
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
            .field("xds", &self.0.xds.is_some())
            .field("certificates", &self.0.certificates.is_some())
            .finish()
    }
}

type StackFuture = <ClientService<Endpoints> as tower::Service<http::Request<MeshBody>>>::Future;

pin_project_lite::pin_project! {
    /// The future of a [`MeshClient`] call: the stack's own future, held
    /// as it is (no allocation of its own).
    pub struct ResponseFuture {
        #[pin]
        inner: StackFuture,
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<MeshBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl std::fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient").finish_non_exhaustive()
    }
}

impl MeshClient {
    /// Sends a request through the mesh. Locally generated failures (no
    /// route, overflow, timeout, ...) come back as responses carrying
    /// `x-mesh-response-flags`; `Err` means the request could not be
    /// answered at all.
    pub fn request<B>(&self, req: http::Request<B>) -> ResponseFuture
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The stack is called as it is, not cloned per request: see
        // `CallRef`.
        let inner = self.inner.call_ref(req.map(boxed));
        ResponseFuture { inner }
    }
}

impl<B> tower::Service<http::Request<B>> for MeshClient
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every call drives its own clone of the stack to readiness, and
        // limits fail fast (503 UO) rather than applying backpressure here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> ResponseFuture {
        self.request(req)
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
}

/// Builds a [`Mesh`].
#[derive(Clone)]
pub struct MeshBuilder {
    paths: Vec<PathBuf>,
    mesh_config: Option<PathBuf>,
    client: Client,
    poll_interval: Duration,
    options: ClientOptions,
    identity: Option<TlsSource>,
    auto_mtls: Option<bool>,
    xds: Option<XdsSource>,
    ca: Option<CaOptions>,
    resolver: Option<Arc<dyn Resolve>>,
}

impl Mesh {
    /// Local mode (the embedded default): the model is compiled in-process
    /// from a directory of Istio YAML, which is watched for changes.
    pub fn local(path: impl Into<PathBuf>) -> MeshBuilder {
        MeshBuilder {
            paths: vec![path.into()],
            mesh_config: None,
            client: Client::new("default", Labels::new()),
            poll_interval: Duration::from_millis(500),
            options: ClientOptions::default(),
            identity: None,
            auto_mtls: None,
            xds: None,
            ca: None,
            resolver: None,
        }
    }

    /// Mesh mode: the model comes from a control plane over xDS (`meshd`,
    /// istiod, or any Envoy v3 ADS server), `servers` in priority order
    /// (`http://127.0.0.1:15010`); the next one is used while a server is
    /// unreachable, and the first again as soon as it is back. The builder
    /// takes the same identity options as local mode (sent as the node's
    /// Istio metadata) plus [`MeshBuilder::xds_cache_file`],
    /// [`MeshBuilder::xds_ready_timeout`] and [`MeshBuilder::xds_tuning`].
    pub fn xds<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> MeshBuilder {
        let mut b = Self::local(PathBuf::new());
        b.paths.clear();
        b.xds = Some(XdsSource::new(
            servers.into_iter().map(Into::into).collect(),
        ));
        b
    }

    /// A mesh over a model channel someone else feeds (tests, or an xDS client).
    pub fn from_model(client: Client, model: ModelRx) -> Self {
        Self::assemble(client, model, ClientOptions::default())
    }

    fn assemble(client: Client, model: ModelRx, options: ClientOptions) -> Self {
        let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver);
        Self::with_background(client, model, options, Background::default(), resolver)
    }

    fn with_background(
        client: Client,
        model: ModelRx,
        options: ClientOptions,
        background: Background,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
        let layer = crate::client::layer(model.clone(), options);
        let endpoints = secured_endpoints(&model, None, true, &resolver);
        Self {
            client,
            model,
            guard: MeshGuard(Arc::new(background)),
            layer,
            endpoints,
            identity: None,
            resolver,
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
        self
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
        crate::server::Server::new(self.model(), tls).keep_alive(self.keep_alive())
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
    pub fn xds_status(&self) -> Option<XdsStatus> {
        self.guard.0.xds.as_ref().map(|f| f.main.status())
    }

    /// The workload certificate from the mesh CA, kept rotating, when
    /// [`MeshBuilder::ca`] was given: feed it to the inbound server
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

impl MeshBuilder {
    /// The workload's namespace (default `default`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.client.namespace = ns.into();
        self
    }

    /// The workload's labels (used by `sourceLabels`, selectors, subsets).
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.client.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The workload's service account (its SPIFFE identity).
    pub fn service_account(mut self, sa: impl Into<String>) -> Self {
        self.client.service_account = Some(sa.into());
        self
    }

    /// Another file or directory of config, in addition to the first.
    pub fn add_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths.push(path.into());
        self
    }

    /// A MeshConfig file (rootNamespace, trustDomain, pathNormalization, ...).
    pub fn mesh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.mesh_config = Some(path.into());
        self
    }

    /// How often the directory is checked for changes (default 500 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Options of the client stack (retry body limit, retry budget, default timeout).
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// The workload's certificate and trust bundle (e.g.
    /// `TlsSource::from_provider(&provider)` over a rotating
    /// `mesh_ca::CertificateProvider`): outbound requests use mesh mTLS to
    /// in-mesh endpoints, and [`Mesh::identity`] returns it for the server.
    pub fn identity(mut self, identity: TlsSource) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Overrides MeshConfig's `enableAutoMtls` (default: the MeshConfig
    /// file's value, else on).
    pub fn auto_mtls(mut self, on: bool) -> Self {
        self.auto_mtls = Some(on);
        self
    }

    /// xDS mode only: where to keep the last config received, so that a
    /// restart with no reachable control plane serves it.
    pub fn xds_cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        if let Some(x) = &mut self.xds {
            x.cache_file = Some(path.into());
        }
        self
    }

    /// xDS mode: the ports this workload serves with [`crate::server`].
    /// Its server listeners (`xds.istio.io/grpc/lds/inbound/0.0.0.0:<port>`)
    /// are then also asked for by name, on a second stream, as gRPC servers
    /// do: istiod sends a workload's server listeners, and so the
    /// authorization policies its RBAC filters carry, only to a client
    /// that names them (meshd also sends them unasked). `build()` waits
    /// for their answer too, so the server never starts without the policy.
    pub fn inbound_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        if let Some(x) = &mut self.xds {
            x.inbound_ports = ports.into_iter().collect();
        }
        self
    }

    /// xDS mode only: how long `build()` waits for the first model (10 s).
    pub fn xds_ready_timeout(mut self, timeout: Duration) -> Self {
        if let Some(x) = &mut self.xds {
            x.ready_timeout = timeout;
        }
        self
    }

    /// xDS mode only: adjusts the xDS client's settings (backoff,
    /// does-not-exist timeout, extra node metadata).
    pub fn xds_tuning(mut self, f: impl Fn(&mut XdsClientConfig) + Send + Sync + 'static) -> Self {
        if let Some(x) = &mut self.xds {
            let tuning: XdsTuning = Arc::new(f);
            x.tuning = Some(tuning);
        }
        self
    }

    /// Looks up host-named endpoints (`resolution: DNS` and
    /// `DNS_ROUND_ROBIN` ServiceEntries, passthrough to a host name) with
    /// `resolver` instead of the system's ([`SystemResolver`]), e.g. a
    /// DNS client that reports TTLs, or a test's scripted answers.
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Gets the workload certificate from the mesh CA (and keeps rotating
    /// it); needs [`MeshBuilder::service_account`]. Works in both modes; in
    /// xDS mode it is also the client certificate for `https://` servers.
    pub fn ca(mut self, ca: CaOptions) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Local mode: loads and compiles the config and starts watching it;
    /// fails when the initial config is unreadable or invalid, and later
    /// invalid edits are rejected while the last good model keeps serving.
    /// xDS mode: waits for the first model from the control plane (or the
    /// cache file), failing after the ready timeout with an error that
    /// names the servers. With a CA, also waits for the first certificate.
    pub async fn build(self) -> Result<Mesh, SourceError> {
        // Read once: trust domain, auto-mTLS and the xDS client all need it.
        let mesh_config = self.load_mesh_config()?;
        let identity = match &self.ca {
            Some(ca) => {
                let td = mesh_config.trust_domain().to_string();
                Some(Arc::new(start_identity(ca, &self.client, &td).await?))
            }
            None => None,
        };
        let auto_mtls = self.auto_mtls.unwrap_or_else(|| mesh_config.auto_mtls());
        // An explicit identity wins over the CA's certificate.
        let tls = self
            .identity
            .clone()
            .or_else(|| identity.as_deref().map(TlsSource::from_provider));
        let resolver = self
            .resolver
            .clone()
            .unwrap_or_else(|| Arc::new(SystemResolver));
        let mesh = match &self.xds {
            Some(source) => {
                let xds = start_xds(source, &self.client, mesh_config, identity.as_deref()).await?;
                let model = xds.model.clone();
                let background = Background {
                    xds: Some(xds),
                    certificates: identity,
                    ..Background::default()
                };
                Mesh::with_background(self.client, model, self.options, background, resolver)
            }
            None => {
                let source = LocalSource {
                    paths: self.paths,
                    mesh_config: self.mesh_config,
                    poll_interval: self.poll_interval,
                };
                // Reading and compiling the config is blocking work.
                let client = self.client.clone();
                let (model, watcher) =
                    tokio::task::spawn_blocking(move || watch_local(source, client))
                        .await
                        .map_err(|e| {
                            SourceError::Unreadable(format!("loading the config: {e}"))
                        })??;
                let background = Background {
                    watcher: Some(watcher),
                    certificates: identity,
                    ..Background::default()
                };
                Mesh::with_background(self.client, model, self.options, background, resolver)
            }
        };
        // Without an identity auto-mTLS cannot apply, so the flag only
        // matters with one.
        Ok(match tls {
            Some(tls) => mesh.with_identity(tls, auto_mtls),
            None => mesh,
        })
    }

    fn load_mesh_config(&self) -> Result<MeshConfig, SourceError> {
        match &self.mesh_config {
            Some(p) => load_mesh_config(p).map_err(|e| SourceError::Invalid(vec![e])),
            None => Ok(MeshConfig::default()),
        }
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
