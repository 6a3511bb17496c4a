//! Builds the mesh and the listeners from the flags and runs them until a
//! shutdown (SIGTERM, SIGINT or `POST /quitquitquit`) has drained them.
//!
//! Order matters to the app beside the shim: every port is bound first, so
//! a port conflict fails the start at once; readiness answers 503 from
//! then on; it turns 200 only once the first complete config and (when the
//! shim has an inbound side or a CA) the certificate are in. A shutdown
//! turns readiness back to 503, stops accepting everywhere and lets
//! requests in flight finish for up to `--drain-timeout`, returning as
//! soon as the last connection is gone.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use mesh_tower::server::TlsSource;
use mesh_tower::{CaOptions, Mesh};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{MeshArgs, RunArgs};
use crate::error::ShimError;
use crate::{admin, inbound, outbound};

/// What the shim's ports share: readiness, the shutdown switch and, once
/// built, the mesh.
pub struct Lifecycle {
    ready: AtomicBool,
    shutdown: watch::Sender<bool>,
    mesh: OnceLock<Arc<Mesh>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("ready", &self.is_ready())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            ready: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            mesh: OnceLock::new(),
        }
    }
}

impl Lifecycle {
    /// True once config and certificate are in, until a shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Starts the shutdown (idempotent).
    pub fn shut_down(&self) {
        self.ready.store(false, Ordering::Release);
        self.shutdown.send_replace(true);
    }

    /// True once a shutdown started.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when the shutdown starts.
    pub fn signaled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Records the built mesh (admin and metrics serve from it).
    pub(crate) fn set_mesh(&self, mesh: Arc<Mesh>) {
        let _ = self.mesh.set(mesh);
    }

    /// Turns readiness on, unless a shutdown already started.
    pub(crate) fn mark_ready(&self) {
        self.ready
            .store(!self.is_shutting_down(), Ordering::Release);
        tracing::info!("ready");
        println!("mesh-shim: ready");
    }

    /// The mesh, once built.
    pub fn mesh(&self) -> Option<&Arc<Mesh>> {
        self.mesh.get()
    }
}

/// The listeners, bound before anything else.
struct Listeners {
    inbound: Option<TcpListener>,
    outbound: TcpListener,
    upstreams: Vec<(crate::config::UpstreamPort, TcpListener)>,
    admin: TcpListener,
    metrics: TcpListener,
    ready: TcpListener,
}

pub(crate) async fn bind(role: &'static str, addr: SocketAddr) -> Result<TcpListener, ShimError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| ShimError::Bind { role, addr, source })?;
    let local = l
        .local_addr()
        .map_err(|source| ShimError::Bind { role, addr, source })?;
    // Scripts and tests read the ports chosen for `0` from these lines.
    println!("mesh-shim: {role} listening on {local}");
    Ok(l)
}

async fn bind_all(args: &RunArgs) -> Result<Listeners, ShimError> {
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let inbound = if args.app_port.is_some() || args.capture_inbound {
        Some(bind("inbound", args.inbound()).await?)
    } else {
        None
    };
    let mut upstreams = Vec::new();
    for u in &args.upstreams {
        upstreams.push((u.clone(), bind("upstream", loopback(u.local_port)).await?));
    }
    Ok(Listeners {
        inbound,
        outbound: bind("outbound", loopback(args.outbound_port)).await?,
        upstreams,
        admin: bind("admin", loopback(args.admin_port)).await?,
        metrics: bind(
            "metrics",
            SocketAddr::new(args.inbound_addr, args.metrics_port),
        )
        .await?,
        ready: bind("ready", SocketAddr::new(args.inbound_addr, args.ready_port)).await?,
    })
}

/// Runs the shim until it has shut down.
pub async fn run(args: RunArgs) -> Result<(), ShimError> {
    check(&args.mesh)?;
    let listeners = bind_all(&args).await?;
    let life = Arc::new(Lifecycle::default());
    let mut tasks = JoinSet::new();
    tokio::spawn(admin::serve_ready(
        listeners.ready,
        life.clone(),
        args.drain_timeout,
    ));
    spawn_signals(life.clone());

    let mesh = Arc::new(build_mesh(&args.mesh, false).await?);
    life.set_mesh(mesh.clone());
    let identity = mesh.tls_source();

    tasks.spawn(admin::serve_admin(
        listeners.admin,
        life.clone(),
        args.drain_timeout,
    ));
    tasks.spawn(admin::serve_metrics(
        listeners.metrics,
        life.clone(),
        args.drain_timeout,
    ));
    let out = outbound::Outbound::new(&mesh, args.header_timeout, args.drain_timeout);
    tasks.spawn(out.clone().serve_proxy(listeners.outbound, life.signaled()));
    for (u, l) in listeners.upstreams {
        tasks.spawn(out.clone().serve_upstream(l, u.authority, life.signaled()));
    }
    if let Some(l) = listeners.inbound {
        let Some(tls) = identity else {
            return Err(ShimError::Usage(
                "the inbound side (--app-port, --capture-inbound) needs a workload identity: pass --ca-addr (with --ca-root and --service-account) or --cert-dir".into(),
            ));
        };
        let app = args
            .app_port
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
        let inbound = inbound::Inbound::new(&mesh, tls, app, args.header_timeout);
        tasks.spawn(inbound.serve(l, life.signaled(), args.drain_timeout));
    }
    life.mark_ready();

    while tasks.join_next().await.is_some() {}
    println!("mesh-shim: drained, exiting");
    Ok(())
}

/// Flag combinations that cannot work, refused before anything starts.
pub(crate) fn check(m: &MeshArgs) -> Result<(), ShimError> {
    if m.ca_addr.is_some() && m.ca_root.is_none() {
        return Err(ShimError::Usage(
            "--ca-addr needs --ca-root: the PEM roots that verify the CA (meshd's root-cert.pem)"
                .into(),
        ));
    }
    if m.ca_addr.is_some() && m.service_account.is_none() {
        return Err(ShimError::Usage(
            "--ca-addr needs --service-account: the identity the certificate is for".into(),
        ));
    }
    Ok(())
}

pub(crate) fn spawn_signals(life: Arc<Lifecycle>) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = term => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
            () = life.signaled() => return,
        }
        life.shut_down();
    });
}

/// The mesh the flags describe; `gateway` makes the workload a gateway
/// (its Gateways' servers, the VirtualServices bound to them).
pub(crate) async fn build_mesh(m: &MeshArgs, gateway: bool) -> Result<Mesh, ShimError> {
    let ca = m.ca_addr.as_ref().map(|addr| {
        let mut ca = CaOptions::new(
            addr.clone(),
            m.ca_server_name.clone(),
            m.ca_root.clone().unwrap_or_default(),
        );
        ca.token_file = m.ca_token_file.clone();
        ca.output_dir = m.cert_output.clone();
        ca.timeout = m.ready_timeout;
        ca
    });
    let files = match &m.cert_dir {
        Some(dir) => Some(TlsSource::fixed(
            mesh_ca::files::read_workload_files(dir).map_err(|source| ShimError::CertDir {
                dir: dir.display().to_string(),
                source,
            })?,
        )),
        None => None,
    };
    macro_rules! common {
        ($b:expr) => {{
            let mut b = $b
                .namespace(m.namespace.clone())
                .labels(m.labels.0.iter().cloned());
            if let Some(sa) = &m.service_account {
                b = b.service_account(sa.clone());
            }
            if let Some(w) = &m.workload_name {
                b = b.workload_name(w.clone());
            }
            if let Some(ca) = ca {
                b = b.ca(ca);
            }
            if let Some(tls) = files {
                b = b.identity(tls);
            }
            if let Some(mc) = &m.mesh_config {
                b = b.mesh_config(mc.clone());
            }
            if gateway {
                b = b.gateway();
            }
            b
        }};
    }
    let mesh = match &m.config {
        Some(dir) => common!(Mesh::local(dir.clone())).build().await?,
        None => {
            let servers = m.xds_addr.iter().map(|a| {
                if a.contains("://") {
                    a.clone()
                } else {
                    format!("http://{a}")
                }
            });
            // No `inbound_ports`: meshd sends a workload its server
            // listeners unasked, and a port no Service names would make
            // the start wait for an answer that never comes.
            common!(Mesh::xds(servers))
                .xds_ready_timeout(m.ready_timeout)
                .build()
                .await?
        }
    };
    Ok(mesh)
}
