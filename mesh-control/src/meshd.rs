//! Starting and stopping meshd: the CA, the ADS + CSDS + CA gRPC server
//! (plaintext), the same ADS + CA over TLS ([`crate::secure`]), the HTTP
//! server, the directory watcher and the compile, event and convergence
//! tasks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mesh_ca::{
    ca_store, CaConfig, CaService, CertificateAuthority, CertificateProvider, LocalIssuer,
    TokenStore,
};
use mesh_xds::server::{AdsServer, CsdsServer, SnapshotCache};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;

use crate::controller::Controller;
use crate::error::{MeshdError, Result};
use crate::http::{self, HttpState};
use crate::load::ConfigSource;
use crate::metrics::Metrics;
use crate::settings::MeshdConfig;
use crate::tap::NodeTap;
use crate::watch::Debouncer;

/// The control plane.
#[derive(Debug)]
pub struct Meshd;

/// A running meshd. Dropping it without [`MeshdHandle::shutdown`] stops the
/// background tasks too.
#[derive(Debug)]
pub struct MeshdHandle {
    xds_addr: SocketAddr,
    secure_xds_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    webhook_addr: Option<SocketAddr>,
    ctl: Controller,
    ca: Arc<CertificateAuthority>,
    ca_dir: PathBuf,
    // The TLS port's certificate, rotated while this lives.
    serving: Option<CertificateProvider>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Completes when the HTTP port's thread has stopped.
    http_done: Option<oneshot::Receiver<()>>,
    // Keeps a temporary CA directory alive as long as meshd runs.
    _ca_temp: Option<tempfile::TempDir>,
    // The Kubernetes watchers, stopped with meshd.
    kube: Option<crate::kube::KubeSource>,
    // This replica's part in the leader election.
    elector: Option<crate::kube::leader::Elector>,
    // The webhook port's certificate, rotated while this lives.
    _webhook_serving: Option<CertificateProvider>,
}

impl MeshdHandle {
    /// The bound xDS + CA gRPC address (plaintext).
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The bound xDS + CA gRPC address over TLS (istiod's 15012), if
    /// served. Its certificate names [`crate::secure::SERVING_NAMES`] and
    /// chains to [`MeshdHandle::root_cert_file`].
    pub fn secure_xds_addr(&self) -> Option<SocketAddr> {
        self.secure_xds_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound admission webhook address (HTTPS, `POST /validate` and
    /// `POST /inject`), if served; its certificate chains to
    /// [`MeshdHandle::root_cert_pem`], the `caBundle` of the webhook
    /// configurations.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// The file holding the mesh root (`<ca_dir>/root-cert.pem`): what a
    /// workload trusts to verify meshd's TLS port, the CA and its peers
    /// (`CaOptions::roots_file`, `xds_roots` in the SDK).
    pub fn root_cert_file(&self) -> PathBuf {
        self.ca_dir.join(ca_store::ROOT_CERT_FILE)
    }

    /// The TLS port's current serving certificate, if the port is served.
    pub fn serving_certificate(&self) -> Option<Arc<mesh_ca::WorkloadCertificate>> {
        self.serving.as_ref().map(CertificateProvider::current)
    }

    /// The control-plane state: current generation, nodes, rejections.
    pub fn controller(&self) -> &Controller {
        &self.ctl
    }

    /// The number of the config generation being served, if any.
    pub fn generation(&self) -> Option<u64> {
        self.ctl.generation().map(|g| g.number)
    }

    /// What the Kubernetes source holds, when it is one.
    pub fn kube_store(&self) -> Option<&crate::kube::KubeStore> {
        self.kube.as_ref().map(crate::kube::KubeSource::store)
    }

    /// True while this replica is the elected leader (only with the
    /// Kubernetes source).
    pub fn is_leader(&self) -> bool {
        self.elector
            .as_ref()
            .is_some_and(crate::kube::leader::Elector::is_leader)
    }

    /// The CA.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The mesh root certificates (PEM), what workloads must trust.
    pub fn root_cert_pem(&self) -> String {
        self.ca.trust_bundle().to_pem()
    }

    /// Where the CA keeps its keys.
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }

    /// Stops serving and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        if let Some(done) = self.http_done.take() {
            // Its connections end with the thread's runtime.
            let _ = done.await;
        }
    }
}

impl Drop for MeshdHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MeshdError::Bind { what, addr, source })
}

fn local_addr(l: &TcpListener, what: &'static str, addr: SocketAddr) -> Result<SocketAddr> {
    l.local_addr()
        .map_err(|source| MeshdError::Bind { what, addr, source })
}

/// A private temporary directory for the CA's files, gone with meshd.
fn temp_ca_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("meshd-ca-")
        .tempdir()
        .map_err(|e| MeshdError::Io {
            what: "creating a temporary CA directory (pass --ca-dir to keep the root)".into(),
            source: e,
        })
}

fn load_ca(
    config: &MeshdConfig,
) -> Result<(
    Arc<CertificateAuthority>,
    PathBuf,
    Option<tempfile::TempDir>,
)> {
    let (dir, temp) = match &config.ca_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = temp_ca_dir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| MeshdError::Io {
        what: format!("creating the CA directory {}", dir.display()),
        source: e,
    })?;
    let (ca, source) = ca_store::load_or_create(&dir, CaConfig::new(config.trust_domain.clone()))
        .map_err(|source| MeshdError::Ca {
        dir: dir.clone(),
        source,
    })?;
    tracing::info!(dir = %dir.display(), ?source, trust_domain = config.trust_domain, "CA ready");
    Ok((Arc::new(ca), dir, temp))
}

/// The CA from the cluster's Secret ([`crate::kube::ca_secret`]), kept in a
/// private temporary directory.
async fn load_ca_from_cluster(
    client: kube::Client,
    config: &MeshdConfig,
) -> Result<(
    Arc<CertificateAuthority>,
    PathBuf,
    Option<tempfile::TempDir>,
)> {
    let temp = temp_ca_dir()?;
    let dir = temp.path().to_path_buf();
    let from =
        crate::kube::ca_secret::sync(client, &config.kube_namespace, &dir, &config.trust_domain)
            .await?;
    let (ca, _) = ca_store::load_or_create(&dir, CaConfig::new(config.trust_domain.clone()))
        .map_err(|source| MeshdError::Ca {
            dir: dir.clone(),
            source,
        })?;
    tracing::info!(
        namespace = config.kube_namespace,
        ?from,
        trust_domain = config.trust_domain,
        "CA ready from the cluster's Secret"
    );
    Ok((Arc::new(ca), dir, Some(temp)))
}

impl Meshd {
    /// Starts meshd: loads the config (an invalid one is reported and meshd
    /// stays not-ready until a valid one arrives), binds both ports and
    /// starts watching.
    pub async fn start(config: MeshdConfig) -> Result<MeshdHandle> {
        if config.config_dir.is_none() && config.kubernetes.is_none() {
            return Err(MeshdError::Settings(
                "no config source: pass --config DIR, --source kubernetes, or both".into(),
            ));
        }
        let kube_client = match &config.kubernetes {
            Some(settings) => Some(crate::kube::client(settings).await?),
            None => None,
        };
        let kube = match &kube_client {
            Some(client) => Some(crate::kube::KubeSource::start(client.clone()).await),
            None => None,
        };
        let source = ConfigSource {
            dir: config.config_dir.clone(),
            kube: kube.as_ref().map(|k| k.store().clone()),
            mesh_config: config.mesh_config.clone(),
            trust_domain: config.trust_domain.clone(),
        };
        source
            .check_readable()
            .map_err(|detail| MeshdError::ConfigDir {
                path: config.config_dir.clone().unwrap_or_default(),
                detail,
            })?;
        if let Some(k) = &kube {
            if let Err(missing) =
                crate::kube::wait_synced(k.store(), config.kube_sync_timeout).await
            {
                tracing::warn!(
                    ?missing,
                    "the API server has not listed every kind yet; meshd stays not ready until it does"
                );
            }
        }
        let (ca, ca_dir, ca_temp) = match (&kube_client, &config.ca_dir) {
            // On a cluster the root lives in a Secret every replica shares;
            // an explicit --ca-dir (a mounted plug-in CA) still wins.
            (Some(client), None) => load_ca_from_cluster(client.clone(), &config).await?,
            _ => load_ca(&config)?,
        };
        let tokens = match &config.ca_tokens {
            Some(p) => TokenStore::load(p).map_err(|source| MeshdError::Ca {
                dir: p.clone(),
                source,
            })?,
            None => TokenStore::empty(),
        };

        let cache = SnapshotCache::new();
        let metrics = Arc::new(Metrics::new());
        let ctl = Controller::new(cache.clone(), metrics);

        let mut watched: Vec<PathBuf> = config.config_dir.iter().cloned().collect();
        watched.extend(config.mesh_config.clone());
        let initial_fp = source.fingerprint(&watched);
        let mut next_generation = 1;
        if source.ready() {
            match source.load(next_generation) {
                Ok(g) => {
                    next_generation += 1;
                    ctl.apply(g, Instant::now());
                }
                Err(r) => ctl.reject(r),
            }
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(ctl.clone().run()));
        if next_generation > 1 {
            // Nobody is connected yet: this is quick, and the first
            // generation is served when start returns.
            ctl.serving(1).await;
        }

        let hook_ctl = ctl.clone();
        let ads = AdsServer::new(cache.clone())
            .with_node_hook(move |n| hook_ctl.node_seen(n))
            .with_shutdown(shutdown_rx.clone());
        // Same server (cache, events, stream ids), but every node admitted
        // against what the TLS port authenticated.
        let ads_secure = ads.clone().with_node_check(crate::secure::admit_node);
        tasks.push(tokio::spawn(crate::events::run(ctl.clone(), ads.events())));
        tasks.push(tokio::spawn(ctl.convergence().clone().run()));

        let xds_listener = bind("xDS/CA gRPC", config.xds_addr).await?;
        let xds_addr = local_addr(&xds_listener, "xDS/CA gRPC", config.xds_addr)?;
        let bind_err = |source| MeshdError::Bind {
            what: "HTTP",
            addr: config.http_addr,
            source,
        };
        let http_listener = std::net::TcpListener::bind(config.http_addr).map_err(bind_err)?;
        let http_addr = http_listener.local_addr().map_err(bind_err)?;

        let tap_ctl = ctl.clone();
        let tap: crate::tap::NodeSink = Arc::new(move |n| tap_ctl.raw_node(n));
        let ads_svc = NodeTap::new(ads.into_service(), tap.clone());
        let ca_service = CaService::new(ca.clone(), tokens);
        // With a cluster, pods' service account tokens are credentials too
        // (TokenReview), on both ports: every clone shares the verifier.
        if let Some(k) = &kube {
            let reviewer =
                crate::kube::tokenreview::TokenReviewer::new(k.client().clone(), ca.trust_domain())
                    .with_audiences(config.token_audiences.clone());
            ca_service.set_token_verifier(Some(Arc::new(reviewer)));
        }
        let ca_svc = ca_service.clone().into_server();
        let csds_svc = CsdsServer::new(cache.clone()).into_service();
        let xds_serving = Arc::new(AtomicBool::new(false));
        let serving = xds_serving.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let server = tonic::transport::Server::builder()
                .add_service(ads_svc)
                .add_service(ca_svc)
                .add_service(csds_svc)
                .serve_with_incoming_shutdown(no_delay(xds_listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the xDS/CA gRPC server stopped");
            }
            serving.store(false, Ordering::Release);
        }));
        // The socket is bound and listening: connections are accepted from
        // here on, so the port counts as serving.
        xds_serving.store(true, Ordering::Release);

        let mut webhook_serving = None;
        let (secure_xds_addr, serving) = match config.secure_xds_addr {
            Some(want) => {
                let port = SecurePort {
                    want,
                    ca: &ca,
                    ca_dir: &ca_dir,
                    ca_service,
                    ads: ads_secure,
                    tap,
                };
                let (addr, serving, task) = match port.start(shutdown_rx.clone()).await {
                    Ok(started) => started,
                    Err(e) => {
                        // Nothing may outlive a failed start.
                        let _ = shutdown.send(true);
                        tasks.iter().for_each(JoinHandle::abort);
                        return Err(e);
                    }
                };
                tasks.push(task);
                (Some(addr), Some(serving))
            }
            None => (None, None),
        };

        let webhook_addr = match config.webhook_addr {
            Some(want) => {
                match start_webhook(
                    want,
                    &ca,
                    &ca_dir,
                    ctl.clone(),
                    config.inject.clone(),
                    shutdown_rx.clone(),
                )
                .await
                {
                    Ok((addr, provider, task)) => {
                        tasks.push(task);
                        webhook_serving = Some(provider);
                        Some(addr)
                    }
                    Err(e) => {
                        let _ = shutdown.send(true);
                        tasks.iter().for_each(JoinHandle::abort);
                        return Err(e);
                    }
                }
            }
            None => None,
        };

        let elector = match (&kube_client, &kube) {
            (Some(client), Some(source)) => {
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
                    format!("meshd-{}-{}", std::process::id(), xds_addr.port())
                });
                let elector = crate::kube::leader::Elector::start(
                    client.clone(),
                    &config.kube_namespace,
                    identity,
                    config.kube_lease,
                );
                tasks.push(tokio::spawn(crate::kube::publish::root_configmaps(
                    client.clone(),
                    source.store().clone(),
                    ca.trust_bundle().to_pem(),
                    config.kube_resync,
                    elector.leader(),
                )));
                tasks.push(tokio::spawn(crate::kube::publish::statuses(
                    client.clone(),
                    ctl.clone(),
                    source.istio_resources(),
                    elector.leader(),
                )));
                Some(elector)
            }
            _ => None,
        };

        let state = HttpState {
            ctl: ctl.clone(),
            config_dir: config.config_dir.clone().unwrap_or_default(),
            xds_serving,
            kube: kube.as_ref().map(|k| k.store().clone()),
            leader: elector.as_ref().map(crate::kube::leader::Elector::leader),
        };
        let http_done =
            http::spawn(http_listener, state, shutdown_rx.clone()).map_err(|e| MeshdError::Io {
                what: "starting the HTTP port's thread".into(),
                source: e,
            })?;

        tasks.push(tokio::spawn(watch_loop(
            WatchLoop {
                source,
                paths: watched,
                fingerprint: initial_fp,
                debouncer: Debouncer::new(config.debounce, config.debounce_max),
                poll: config.poll_interval,
                next_generation,
            },
            ctl.clone(),
            shutdown_rx,
        )));

        let root_cert = ca_dir.join(ca_store::ROOT_CERT_FILE);
        tracing::info!(
            %xds_addr,
            secure_xds_addr = ?secure_xds_addr,
            %http_addr,
            config = ?config.config_dir,
            kubernetes = config.kubernetes.is_some(),
            root_cert = %root_cert.display(),
            "meshd serving; workloads verify its TLS port and the CA with root_cert"
        );
        Ok(MeshdHandle {
            xds_addr,
            secure_xds_addr,
            http_addr,
            webhook_addr,
            ctl,
            ca,
            ca_dir,
            serving,
            shutdown,
            tasks,
            http_done: Some(http_done),
            _ca_temp: ca_temp,
            kube,
            elector,
            _webhook_serving: webhook_serving,
        })
    }
}

/// What the TLS port serves and with what.
struct SecurePort<'a> {
    want: SocketAddr,
    ca: &'a Arc<CertificateAuthority>,
    ca_dir: &'a Path,
    ca_service: CaService,
    ads: AdsServer,
    tap: crate::tap::NodeSink,
}

impl SecurePort<'_> {
    /// Binds the port, issues its certificate and starts serving; returns
    /// the bound address, the rotating certificate and the server task.
    async fn start(
        self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(SocketAddr, CertificateProvider, JoinHandle<()>)> {
        const WHAT: &str = "xDS/CA gRPC over TLS";
        let listener = bind(WHAT, self.want).await?;
        let addr = local_addr(&listener, WHAT, self.want)?;
        let ca_err = |source| MeshdError::Ca {
            dir: self.ca_dir.to_path_buf(),
            source,
        };
        let identity = crate::secure::serving_identity(self.ca.trust_domain())
            .map_err(|e| ca_err(e.into()))?;
        let serving = LocalIssuer::new(
            self.ca.clone(),
            crate::secure::serving_names(addr),
            Some(crate::secure::SERVING_TTL),
        )
        .start(identity)
        .await
        .map_err(ca_err)?;
        let tls =
            mesh_ca::server::server_tls_config(self.ca, serving.certificates()).map_err(ca_err)?;
        // Authenticate outside the tap: a refused caller's node never
        // reaches auto-registration.
        let ads = crate::secure::Authenticate::new(
            NodeTap::new(self.ads.into_service(), self.tap),
            self.ca_service.clone(),
            addr,
        );
        let incoming = mesh_ca::server::tls_incoming(listener, Arc::new(tls), WHAT);
        let ca_svc = self.ca_service.into_server();
        let task = tokio::spawn(async move {
            let server = tonic::transport::Server::builder()
                .add_service(ads)
                .add_service(ca_svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the TLS xDS/CA gRPC server stopped");
            }
        });
        Ok((addr, serving, task))
    }
}

/// Binds the admission webhook port, issues its certificate (the names of
/// the TLS xDS port) and starts serving.
async fn start_webhook(
    want: SocketAddr,
    ca: &Arc<CertificateAuthority>,
    ca_dir: &Path,
    ctl: Controller,
    injector: crate::kube::inject::InjectConfig,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, CertificateProvider, JoinHandle<()>)> {
    const WHAT: &str = "admission webhook (HTTPS)";
    let listener = bind(WHAT, want).await?;
    let addr = local_addr(&listener, WHAT, want)?;
    let ca_err = |source| MeshdError::Ca {
        dir: ca_dir.to_path_buf(),
        source,
    };
    let identity =
        crate::secure::serving_identity(ca.trust_domain()).map_err(|e| ca_err(e.into()))?;
    let serving = LocalIssuer::new(
        ca.clone(),
        crate::secure::serving_names(addr),
        Some(crate::secure::SERVING_TTL),
    )
    .start(identity)
    .await
    .map_err(ca_err)?;
    let tls = mesh_ca::server::server_tls_config(ca, serving.certificates()).map_err(ca_err)?;
    let task = tokio::spawn(crate::kube::webhook::serve(
        listener,
        Arc::new(tls),
        ctl,
        injector,
        stop,
    ));
    Ok((addr, serving, task))
}

struct WatchLoop {
    source: ConfigSource,
    paths: Vec<PathBuf>,
    fingerprint: u64,
    debouncer: Debouncer,
    poll: std::time::Duration,
    next_generation: u64,
}

async fn watch_loop(mut w: WatchLoop, ctl: Controller, mut shutdown: watch::Receiver<bool>) {
    loop {
        let now = Instant::now();
        let wake = w
            .debouncer
            .deadline()
            .map_or(now + w.poll, |d| d.min(now + w.poll));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.changed() => return,
        }
        let paths = w.paths.clone();
        let source = w.source.clone();
        let fp = tokio::task::spawn_blocking(move || source.fingerprint(&paths))
            .await
            .unwrap_or(w.fingerprint);
        if fp != w.fingerprint {
            w.fingerprint = fp;
            w.debouncer.changed(Instant::now());
        }
        if !w.source.ready() {
            // Nothing is loaded before the cluster was listed once: a
            // config without the cluster's objects would withdraw them.
            continue;
        }
        let Some(first_seen) = w.debouncer.take_due(Instant::now()) else {
            continue;
        };
        let source = w.source.clone();
        let number = w.next_generation;
        let ctl2 = ctl.clone();
        // Loading and validating are CPU work; keep them off the async
        // workers (the compile worker compiles what is accepted).
        let accepted = tokio::task::spawn_blocking(move || match source.load(number) {
            Ok(g) => {
                ctl2.apply(g, first_seen);
                true
            }
            Err(r) => {
                ctl2.reject(r);
                false
            }
        })
        .await
        .unwrap_or(false);
        if accepted {
            w.next_generation += 1;
        }
    }
}

/// The accepted xDS connections, with Nagle's algorithm off. With it on, a
/// response's last segment waits for the client's delayed ACK (about
/// 40 ms on Linux) before it leaves; tonic's own `tcp_nodelay` setting does
/// not apply to connections handed to `serve_with_incoming*`.
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot turn off Nagle on an xDS connection");
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    /// Every accepted xDS connection has Nagle off.
    #[tokio::test]
    async fn xds_connections_are_accepted_without_nagle() {
        let listener = super::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(super::no_delay(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
