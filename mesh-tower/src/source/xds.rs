//! Where the model comes from in mesh mode: a control plane over xDS (the
//! [`mesh_xds::client::XdsClient`]). The workload identity from the mesh
//! CA is [`super::ca`].
//!
//! The xDS client publishes on the same kind of `watch` channel local mode
//! does, so every layer works unchanged. The control plane compiles the
//! model for this node; the inbound half (mTLS modes, JWT rules,
//! authorization) comes from its inbound listeners: meshd's carry the
//! compiled inbound policy, other servers' RBAC filters are enforced as
//! sent (see `mesh_xds::client`). The Telemetry API policy
//! (`Model.telemetry`) is the one meshd compiled for this workload, carried
//! in a listener only SDK nodes get (`mesh_xds::telemetry_policy`); from
//! another control plane it is the policy this workload's MeshConfig gives
//! with no Telemetry resource. The model of the server-listener stream
//! (with inbound ports) contributes its inbound policy only, so the
//! telemetry policy is always the main stream's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_ca::{CertificateProvider, TrustBundle};
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use mesh_xds::client::{XdsClient, XdsClientConfig};
use mesh_xds::node::NodeInfo;
use tokio::sync::watch;

use super::SourceError;
use crate::ModelRx;

/// Adjusts the xDS client's settings (backoff, does-not-exist timeout,
/// node metadata such as `CLUSTER_ID` or `INSTANCE_IPS`).
pub type XdsTuning = Arc<dyn Fn(&mut XdsClientConfig) + Send + Sync>;

/// How to reach the control plane.
#[derive(Clone)]
pub struct XdsSource {
    /// Servers in priority order (`http://127.0.0.1:15010`).
    pub servers: Vec<String>,
    /// Where to keep the last config, to serve it when a restart finds no
    /// control plane.
    pub cache_file: Option<PathBuf>,
    /// How long `build()` waits for the first model (10 s).
    pub ready_timeout: Duration,
    /// Extra settings of the xDS client.
    pub tuning: Option<XdsTuning>,
    /// Ports the workload serves (with [`crate::server`]): its server
    /// listeners are also asked for by name, on a second stream, since a
    /// control plane such as istiod sends them (and so their authorization)
    /// only to a client that names them.
    pub inbound_ports: Vec<u16>,
    /// The workload's name and cluster, sent in the node's metadata
    /// (`WORKLOAD_NAME`, `CLUSTER_ID`) and its id, as a sidecar's.
    pub workload_name: Option<String>,
    /// See `workload_name`.
    pub cluster_id: Option<String>,
    /// PEM roots that verify `https://` servers (meshd's
    /// `<ca_dir>/root-cert.pem`); `None`: the CA's trust bundle, when the
    /// builder has a CA.
    pub roots_file: Option<PathBuf>,
    /// Bootstrap token file sent to `https://` servers when there is no
    /// workload certificate to present.
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for XdsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsSource")
            .field("servers", &self.servers)
            .field("cache_file", &self.cache_file)
            .field("ready_timeout", &self.ready_timeout)
            .field("tuning", &self.tuning.is_some())
            .field("inbound_ports", &self.inbound_ports)
            .field("roots_file", &self.roots_file)
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl XdsSource {
    /// Defaults for `servers`.
    pub fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            cache_file: None,
            ready_timeout: Duration::from_secs(10),
            tuning: None,
            inbound_ports: Vec::new(),
            workload_name: None,
            cluster_id: None,
            roots_file: None,
            token_file: None,
        }
    }
}

/// The node an xDS client sends for `client`.
pub fn node_info(client: &Client) -> NodeInfo {
    NodeInfo {
        namespace: Some(client.namespace.clone()),
        labels: client.labels.clone(),
        service_account: client.service_account.clone(),
        ..NodeInfo::default()
    }
}

/// What a workload runs to be fed over xDS: the client of its whole model
/// and, with inbound ports, the client of its server listeners; `model`
/// is the first's model with the second's inbound policy.
pub struct XdsFeed {
    /// The client of the whole model.
    pub main: XdsClient,
    /// The client of the server listeners, named (see
    /// [`XdsSource::inbound_ports`]).
    pub inbound: Option<XdsClient>,
    /// The model the layers read.
    pub model: ModelRx,
    merger: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for XdsFeed {
    fn drop(&mut self) {
        if let Some(t) = &self.merger {
            t.abort();
        }
    }
}

impl std::fmt::Debug for XdsFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsFeed")
            .field("node", &self.main.node_id())
            .field("inbound", &self.inbound.is_some())
            .finish_non_exhaustive()
    }
}

/// The main model with the inbound policy the named server listeners gave,
/// when they gave one (else the main model's own, e.g. meshd's wildcard
/// answer already carried it).
fn merged(main: &Model, inbound: &Model) -> Arc<Model> {
    if inbound.inbound.listeners.is_empty() {
        return Arc::new(main.clone());
    }
    let mut m = main.clone();
    m.inbound = inbound.inbound.clone();
    m.mesh.path_normalization = inbound.mesh.path_normalization;
    Arc::new(m)
}

/// A model that follows both clients.
fn merge(mut main: ModelRx, mut inbound: ModelRx) -> (ModelRx, tokio::task::JoinHandle<()>) {
    let first = merged(&main.borrow(), &inbound.borrow());
    let (tx, rx) = tokio::sync::watch::channel(first);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = main.changed() => if r.is_err() { return },
                r = inbound.changed() => if r.is_err() { return },
            }
            let m = merged(&main.borrow_and_update(), &inbound.borrow_and_update());
            if tx.send(m).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// The node id of the server-listener stream: the workload's own with
/// `-inbound` after the pod name (`sidecar~IP~POD-inbound.NS~...`), so a
/// control plane keeps the two streams apart while reading the id the
/// same way.
fn inbound_node_id(node: &NodeInfo) -> String {
    let id = if node.id.is_empty() {
        mesh_xds::node::default_node_id(node)
    } else {
        node.id.clone()
    };
    let mut parts: Vec<String> = id.split('~').map(str::to_string).collect();
    match parts.get_mut(2) {
        Some(pod) if parts_len_is_istio(&id) => {
            let at = pod.find('.').unwrap_or(pod.len());
            pod.insert_str(at, "-inbound");
            parts.join("~")
        }
        _ => format!("{id}-inbound"),
    }
}

fn parts_len_is_istio(id: &str) -> bool {
    id.split('~').count() == 4
}

/// How the xDS client talks to `https://` servers (a control plane's TLS
/// port, istiod's or meshd's 15012): the server verified by the mesh root
/// and the name it is dialed with; the caller authenticated by the
/// workload certificate when there is one, else by the bootstrap token.
/// Leaves `cfg` as it is when every server is `http://`.
fn xds_tls(
    source: &XdsSource,
    identity: Option<&CertificateProvider>,
    cfg: &mut XdsClientConfig,
) -> Result<(), SourceError> {
    let Some(server) = source.servers.iter().find(|s| s.starts_with("https://")) else {
        return Ok(());
    };
    let fail = |why: String| SourceError::XdsTls {
        server: server.clone(),
        why,
    };
    let (trust, roots) = match (&source.roots_file, identity) {
        (Some(file), _) => {
            let pem = std::fs::read_to_string(file).map_err(|e| {
                fail(format!(
                    "cannot read the mesh roots {}: {e}; pass meshd's root-cert.pem to .xds_roots(..)",
                    file.display()
                ))
            })?;
            let bundle = TrustBundle::from_pem(&pem, &file.display().to_string())
                .map_err(|e| fail(e.to_string()))?;
            (
                watch::channel(Arc::new(bundle)).1,
                file.display().to_string(),
            )
        }
        (None, Some(p)) => (p.trust_bundle(), "the mesh CA's trust bundle".to_string()),
        (None, None) => {
            return Err(fail(
                "no mesh root to verify the server with: call .xds_roots(<meshd's root-cert.pem>) \
                 or .ca(CaOptions) on the builder"
                    .into(),
            ))
        }
    };
    let certs = identity.map(CertificateProvider::certificates);
    let token = if certs.is_none() {
        let Some(token) = source.token_file.clone() else {
            return Err(fail(
                "no credentials to present: a control plane's TLS port refuses unauthenticated \
                 callers; call .ca(CaOptions) for a workload certificate, or .xds_token_file(..) \
                 with a bootstrap token"
                    .into(),
            ));
        };
        Some(token)
    } else {
        None
    };
    let tls = mesh_ca::tls::control_plane_client_config(certs, trust)
        .map_err(|e| fail(format!("TLS setup: {e}")))?;
    cfg.tls = Some(Arc::new(tls));
    cfg.tls_roots = Some(roots);
    cfg.token_file = token;
    Ok(())
}

/// Starts the xDS client(s) for `client` and waits for the first model
/// (or the cached one), and the server listeners' answer when inbound
/// ports are given. `https://` servers are dialed over TLS (see
/// `xds_tls`): verified by the mesh root and the dialed name, presenting
/// the workload certificate, else the bootstrap token.
pub async fn start_xds(
    source: &XdsSource,
    client: &Client,
    mesh: MeshConfig,
    identity: Option<&CertificateProvider>,
) -> Result<XdsFeed, SourceError> {
    let mut node = node_info(client);
    node.workload_name = source.workload_name.clone();
    node.cluster_id = source.cluster_id.clone();
    let mut cfg = XdsClientConfig::new(source.servers.clone(), node);
    xds_tls(source, identity, &mut cfg)?;
    cfg.mesh_config = mesh;
    cfg.cache_file = source.cache_file.clone();
    if let Some(t) = &source.tuning {
        t(&mut cfg);
    }
    let inbound_cfg = (!source.inbound_ports.is_empty()).then(|| {
        let mut c = cfg.clone();
        c.cache_file = None;
        c.only_listeners = Some(
            source
                .inbound_ports
                .iter()
                .map(|p| mesh_xds::encode::inbound_listener_name("0.0.0.0", *p))
                .collect(),
        );
        c.node.id = inbound_node_id(&c.node);
        c
    });
    let main = XdsClient::start(cfg)?;
    let inbound = inbound_cfg.map(XdsClient::start).transpose()?;
    main.ready(source.ready_timeout).await?;
    let Some(inbound) = inbound else {
        let model = main.model();
        return Ok(XdsFeed {
            main,
            inbound: None,
            model,
            merger: None,
        });
    };
    // Serving before the server listeners answer would serve without the
    // authorization they carry.
    inbound.ready(source.ready_timeout).await?;
    let (model, merger) = merge(main.model(), inbound.model());
    Ok(XdsFeed {
        main,
        inbound: Some(inbound),
        model,
        merger: Some(merger),
    })
}
