//! [`MeshBuilder`]: the options of a [`Mesh`], typed by where its config
//! comes from, so an option that only one mode reads cannot be set in the
//! other (`poll_interval` on an xDS mesh, `xds_cache_file` on a local one).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::config::common::Labels;
use mesh_core::config::load::load_mesh_config;
use mesh_core::config::MeshConfig;
use mesh_core::model::Client;

use crate::balance::{Resolve, SystemResolver};
use crate::client::ClientOptions;
use crate::server::TlsSource;
#[cfg(feature = "ca")]
use crate::source::ca::{start_identity, CaOptions};
#[cfg(feature = "xds")]
use crate::source::xds::{start_xds, XdsSource, XdsTuning};
use crate::source::{watch_local, LocalSource, SourceError};
use crate::telemetry::peer::DEFAULT_CLUSTER;
use crate::telemetry::WorkloadInfo;

use super::{Background, Mesh};

/// Builds a [`Mesh`]. `M` is the mode: [`Local`] from
/// [`Mesh::local`], `Xds` from `Mesh::xds` (the `xds` feature); options
/// both modes read are on every builder, the others only on their mode's,
/// so setting one where it would do nothing does not compile:
///
/// ```compile_fail,E0599
/// // A local mesh has no control plane whose config it could cache.
/// let _ = mesh_tower::Mesh::local("mesh/").xds_cache_file("/tmp/cache.pb");
/// ```
///
/// ```compile_fail,E0599
/// // An xDS mesh watches no directory.
/// let _ = mesh_tower::Mesh::xds(["http://127.0.0.1:15010"]).poll_interval(
///     std::time::Duration::from_secs(1),
/// );
/// ```
///
/// ```
/// // Both read the workload's identity.
/// let _ = mesh_tower::Mesh::local("mesh/").namespace("shop").service_account("cart");
/// let _ = mesh_tower::Mesh::xds(["http://127.0.0.1:15010"]).namespace("shop");
/// ```
#[derive(Clone)]
pub struct MeshBuilder<M = Local> {
    client: Client,
    mesh_config: Option<PathBuf>,
    options: ClientOptions,
    identity: Option<TlsSource>,
    auto_mtls: Option<bool>,
    #[cfg(feature = "ca")]
    ca: Option<CaOptions>,
    resolver: Option<Arc<dyn Resolve>>,
    workload_name: Option<String>,
    cluster_id: Option<String>,
    telemetry: bool,
    mode: M,
}

/// Local mode: Istio YAML from files and directories, compiled in the
/// process and watched for changes.
#[derive(Debug, Clone)]
pub struct Local {
    paths: Vec<PathBuf>,
    poll_interval: Duration,
}

/// Mesh mode: the model from a control plane over xDS.
#[cfg(feature = "xds")]
#[derive(Debug, Clone)]
pub struct Xds {
    source: XdsSource,
}

impl MeshBuilder<Local> {
    pub(super) fn local(path: PathBuf) -> Self {
        Self::with_mode(Local {
            paths: vec![path],
            poll_interval: Duration::from_millis(500),
        })
    }
}

#[cfg(feature = "xds")]
impl MeshBuilder<Xds> {
    pub(super) fn xds(servers: Vec<String>) -> Self {
        Self::with_mode(Xds {
            source: XdsSource::new(servers),
        })
    }
}

impl<M> MeshBuilder<M> {
    fn with_mode(mode: M) -> Self {
        Self {
            client: Client::new("default", Labels::new()),
            mesh_config: None,
            options: ClientOptions::default(),
            identity: None,
            auto_mtls: None,
            #[cfg(feature = "ca")]
            ca: None,
            resolver: None,
            workload_name: None,
            cluster_id: None,
            telemetry: true,
            mode,
        }
    }

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

    /// The workload's name, as telemetry labels it (`source_workload`,
    /// `destination_workload`; a Deployment's name in Kubernetes). Default:
    /// the `app` label.
    pub fn workload_name(mut self, name: impl Into<String>) -> Self {
        self.workload_name = Some(name.into());
        self
    }

    /// The cluster the workload runs in, as telemetry labels it
    /// (`source_cluster`; Istio's `CLUSTER_ID`, default `Kubernetes`).
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = Some(id.into());
        self
    }

    /// Whether the SDK's clients and servers report Istio's metrics and
    /// access logs (default on, as in Istio). Off, the telemetry layers
    /// pass requests through untouched and exchange no peer metadata.
    pub fn telemetry(mut self, on: bool) -> Self {
        self.telemetry = on;
        self
    }

    /// Makes this workload a gateway (Istio's `router` proxy): its model
    /// then holds the Gateways whose selector matches its labels, and the
    /// VirtualServices bound to them (not those bound to `mesh`) route
    /// its requests. Serve it with [`crate::gateway::GatewayServer`].
    /// Local mode compiles it; over xDS the control plane would have to
    /// send gateway listeners, which it does not yet.
    pub fn gateway(mut self) -> Self {
        self.client.router = true;
        self.client.gateways.clear();
        self
    }

    /// The workload's service account (its SPIFFE identity).
    pub fn service_account(mut self, sa: impl Into<String>) -> Self {
        self.client.service_account = Some(sa.into());
        self
    }

    /// A MeshConfig file (rootNamespace, trustDomain, pathNormalization,
    /// enableAutoMtls, ...). In xDS mode the control plane's MeshConfig
    /// decides the model; this one gives the trust domain and auto-mTLS.
    pub fn mesh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.mesh_config = Some(path.into());
        self
    }

    /// Options of the client stack (retry body limit, retry budget, default timeout).
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// The workload's certificate and trust bundle (e.g.
    /// `TlsSource::from_provider(&provider)` over a rotating
    /// `mesh_ca::CertificateProvider`, or `TlsSource::from_files`):
    /// outbound requests use mesh mTLS to in-mesh endpoints, and
    /// [`Mesh::identity`] returns it for the server.
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

    /// Looks up host-named endpoints (`resolution: DNS` and
    /// `DNS_ROUND_ROBIN` ServiceEntries, passthrough to a host name) with
    /// `resolver` instead of the system's ([`SystemResolver`]), e.g. a DNS
    /// client that reports TTLs, or a test's scripted answers.
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Gets the workload certificate from the mesh CA (and keeps rotating
    /// it); needs [`MeshBuilder::service_account`]. Works in both modes; in
    /// xDS mode it is also the client certificate for `https://` servers.
    #[cfg(feature = "ca")]
    pub fn ca(mut self, ca: CaOptions) -> Self {
        self.ca = Some(ca);
        self
    }

    fn load_mesh_config(&self) -> Result<MeshConfig, SourceError> {
        match &self.mesh_config {
            Some(p) => load_mesh_config(p).map_err(|e| SourceError::Invalid(vec![e])),
            None => Ok(MeshConfig::default()),
        }
    }

    /// What both modes do before and after starting their source: the
    /// CA's certificate first (the xDS client may need it to dial), then
    /// the mesh over the model `start` yields.
    async fn finish<F, Fut>(self, start: F) -> Result<Mesh, SourceError>
    where
        F: FnOnce(M, Client, MeshConfig, Option<Arc<mesh_ca::CertificateProvider>>) -> Fut,
        Fut: std::future::Future<Output = Result<(crate::ModelRx, Background), SourceError>>,
    {
        // Read once: trust domain, auto-mTLS and the xDS client all need it.
        let mesh_config = self.load_mesh_config()?;
        #[cfg(feature = "ca")]
        let certificates = match &self.ca {
            Some(ca) => {
                let td = mesh_config.trust_domain().to_string();
                Some(Arc::new(start_identity(ca, &self.client, &td).await?))
            }
            None => None,
        };
        #[cfg(not(feature = "ca"))]
        let certificates: Option<Arc<mesh_ca::CertificateProvider>> = None;
        let auto_mtls = self.auto_mtls.unwrap_or_else(|| mesh_config.auto_mtls());
        // An explicit identity wins over the CA's certificate.
        let tls = self
            .identity
            .clone()
            .or_else(|| certificates.as_deref().map(TlsSource::from_provider));
        let resolver = self
            .resolver
            .clone()
            .unwrap_or_else(|| Arc::new(SystemResolver));
        let (model, background) =
            start(self.mode, self.client.clone(), mesh_config, certificates).await?;
        let workload = WorkloadInfo {
            name: self.workload_name.clone(),
            namespace: Some(self.client.namespace.clone()),
            labels: self.client.labels.clone(),
            service_account: self.client.service_account.clone(),
            cluster: Some(
                self.cluster_id
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLUSTER.to_string()),
            ),
            principal: None,
        };
        let mesh = Mesh::with_background(
            self.client,
            model,
            self.options,
            background,
            resolver,
            workload,
        )
        .telemetry_enabled(self.telemetry);
        // Without an identity auto-mTLS cannot apply, so the flag only
        // matters with one.
        Ok(match tls {
            Some(tls) => mesh.with_identity(tls, auto_mtls),
            None => mesh,
        })
    }
}

impl MeshBuilder<Local> {
    /// Another file or directory of config, in addition to the first.
    pub fn add_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.mode.paths.push(path.into());
        self
    }

    /// How often the config is checked for changes (default 500 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.mode.poll_interval = every;
        self
    }

    /// Loads and compiles the config and starts watching it; fails when
    /// the initial config is unreadable or invalid, and later invalid
    /// edits are rejected while the last good model keeps serving. With
    /// a CA, first waits for the workload certificate.
    pub async fn build(self) -> Result<Mesh, SourceError> {
        let mesh_config = self.mesh_config.clone();
        self.finish(|mode, client, _, certificates| async move {
            let source = LocalSource {
                paths: mode.paths,
                mesh_config,
                poll_interval: mode.poll_interval,
            };
            // Reading and compiling the config is blocking work.
            let (model, watcher) = tokio::task::spawn_blocking(move || watch_local(source, client))
                .await
                .map_err(|e| SourceError::Unreadable(format!("loading the config: {e}")))??;
            // Without the `xds` feature there is no other field to default.
            #[allow(clippy::needless_update)]
            let background = Background {
                watcher: Some(watcher),
                certificates,
                ..Background::default()
            };
            Ok((model, background))
        })
        .await
    }
}

#[cfg(feature = "xds")]
impl MeshBuilder<Xds> {
    /// Where to keep the last config received, so that a restart with no
    /// reachable control plane serves it.
    pub fn xds_cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.mode.source.cache_file = Some(path.into());
        self
    }

    /// The ports this workload serves with [`crate::server`]. Its server
    /// listeners (`xds.istio.io/grpc/lds/inbound/0.0.0.0:<port>`) are then
    /// also asked for by name, on a second stream, as gRPC servers do:
    /// istiod sends a workload's server listeners, and so the
    /// authorization policies its RBAC filters carry, only to a client
    /// that names them (meshd also sends them unasked). `build()` waits
    /// for their answer too, so the server never starts without the policy.
    pub fn inbound_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.mode.source.inbound_ports = ports.into_iter().collect();
        self
    }

    /// The mesh root (PEM, meshd's `<ca_dir>/root-cert.pem`) that verifies
    /// `https://` xDS servers; default: the [`CaOptions`] roots file, else
    /// the CA's trust bundle. The server must also carry the name it is
    /// dialed with (meshd's: `meshd.istio-system.svc`,
    /// `istiod.istio-system.svc`, `localhost`, `127.0.0.1`).
    pub fn xds_roots(mut self, path: impl Into<PathBuf>) -> Self {
        self.mode.source.roots_file = Some(path.into());
        self
    }

    /// A bootstrap token file for `https://` xDS servers, sent as
    /// `authorization: Bearer` when the workload has no certificate to
    /// present (without [`MeshBuilder::ca`]); default: the [`CaOptions`]
    /// token file. Never sent to `http://` servers.
    pub fn xds_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.mode.source.token_file = Some(path.into());
        self
    }

    /// How long `build()` waits for the first model (10 s).
    pub fn xds_ready_timeout(mut self, timeout: Duration) -> Self {
        self.mode.source.ready_timeout = timeout;
        self
    }

    /// Adjusts the xDS client's settings (backoff, does-not-exist timeout,
    /// extra node metadata).
    pub fn xds_tuning(
        mut self,
        f: impl Fn(&mut mesh_xds::client::XdsClientConfig) + Send + Sync + 'static,
    ) -> Self {
        let tuning: XdsTuning = Arc::new(f);
        self.mode.source.tuning = Some(tuning);
        self
    }

    /// Waits for the first model from the control plane (or the cache
    /// file), failing after the ready timeout with an error that names
    /// the servers. With a CA, first waits for the workload certificate,
    /// which also dials `https://` servers with mesh mTLS.
    pub async fn build(mut self) -> Result<Mesh, SourceError> {
        // Telemetry's names for the workload are also the node's.
        self.mode.source.workload_name = self.workload_name.clone();
        self.mode.source.cluster_id = self.cluster_id.clone();
        #[cfg(feature = "ca")]
        if let Some(ca) = &self.ca {
            // The CA's root is the mesh root meshd's TLS port chains to.
            let source = &mut self.mode.source;
            source
                .roots_file
                .get_or_insert_with(|| ca.roots_file.clone());
            if source.token_file.is_none() {
                source.token_file = ca.token_file.clone();
            }
        }
        self.finish(|mode, client, mesh_config, certificates| async move {
            let xds =
                start_xds(&mode.source, &client, mesh_config, certificates.as_deref()).await?;
            let model = xds.model.clone();
            let background = Background {
                xds: Some(xds),
                certificates,
                ..Background::default()
            };
            Ok((model, background))
        })
        .await
    }
}
