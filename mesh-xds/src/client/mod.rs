//! The ADS client: one task that keeps a State-of-the-World ADS stream to
//! the control plane and turns what it receives into a
//! [`mesh_core::model::Model`] published on a `watch` channel (what the SDK
//! layers read).
//!
//! What it does, in the order a session runs:
//! - connects to the first reachable server of [`XdsClientConfig::servers`]
//!   (gRFC A71 fallback: the next one when a server cannot be reached, back
//!   to a higher-priority one as soon as it answers again), over TLS for
//!   `https://` servers ([`XdsClientConfig::tls`], e.g. mesh mTLS);
//! - sends the node with Istio's metadata keys (see [`to_node`]) and subscribes
//!   to every listener (wildcard LDS, as Envoy does), to every cluster
//!   together with the clusters its routes name (`*` plus names: a server
//!   that answers the wildcard, as meshd, sends every cluster a local
//!   compile would hold; one that builds only named clusters, as istiod's
//!   gRPC generator, sends those), then to the route configurations the
//!   listeners name and the load assignments of the EDS clusters (named RDS
//!   and EDS, as gRPC's xDS resolver does);
//! - validates each response with [`crate::decode`]: a valid one is ACKed
//!   (its `version_info` and nonce), an invalid one NACKed once (the previous
//!   version, and an `error_detail` naming the resource and the error) while
//!   the last good resources stay;
//! - publishes a new model only when the resources changed and form a
//!   consistent set: every route configuration a listener names, every
//!   cluster a route sends to and every load assignment of an EDS cluster
//!   present, or declared absent by the does-not-exist timer (a cluster a
//!   route names but the complete CDS set lacks gets a shorter grace, so an
//!   undefined subset does not hold the whole model back);
//! - keeps the last good model across NACKs and disconnects, reconnects with
//!   jittered exponential backoff, and optionally writes each published set
//!   to an on-disk cache it serves at start when no server can be reached.
//!
//! With [`XdsClientConfig::delta`] the same session speaks Delta xDS
//! (incremental: subscriptions and resources travel as changes, a reconnect
//! tells the server what the client holds); the validation, consistency and
//! publishing rules are the same.
//!
//! The inbound half of the model comes from the server listeners: the
//! whole compiled policy when they carry our metadata (meshd), else their
//! standard RBAC filters enforced as sent and the mTLS mode their chains
//! tell; a listener that cannot be understood denies its port (see
//! `inbound`). A control plane that sends server listeners only when named
//! (istiod) needs a second client with [`XdsClientConfig::only_listeners`]:
//! `Mesh::xds(..).inbound_ports(..)` runs one.
//!
//! The model's telemetry policy comes from the `mesh.telemetry` listener
//! meshd sends SDK nodes (see [`crate::telemetry_policy`]); one that does
//! not decode is NACKed with its LDS response. Without it the base model's
//! policy stays.

mod backoff;
mod cache;
mod delta;
mod inbound;
#[cfg(test)]
mod inbound_tests;
mod run;
mod state;
#[cfg(test)]
mod telemetry_tests;
mod validate;

use mesh_core::sync::LockExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::config::MeshConfig;
use mesh_core::model::Model;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::node::NodeInfo;

pub use crate::node::{default_node_id, to_node};
pub use cache::{load_cache, write_cache, CacheError};

/// Settings of an [`XdsClient`].
#[derive(Debug, Clone)]
pub struct XdsClientConfig {
    /// Control-plane addresses in priority order (`http://127.0.0.1:15010`).
    pub servers: Vec<String>,
    /// Who this workload is; sent as the xDS node.
    pub node: NodeInfo,
    /// Mesh-wide settings for the parts of the model xDS does not carry
    /// (trust domain, outbound policy, path normalization).
    pub mesh_config: MeshConfig,
    /// First reconnect delay (1 s).
    pub backoff_base: Duration,
    /// Longest reconnect delay (30 s).
    pub backoff_max: Duration,
    /// How long a route configuration, cluster or load assignment that was
    /// asked for may stay unanswered before it is taken as absent (15 s, as
    /// gRPC).
    pub does_not_exist_timeout: Duration,
    /// How long a cluster that a route sends to may be missing from the
    /// (complete, wildcard) CDS set before the model is published without
    /// it (2 s): long enough for a server that sends routes before their
    /// clusters, short enough that a route to an undefined subset does not
    /// hold back startup.
    pub missing_cluster_grace: Duration,
    /// TCP + HTTP/2 connect timeout per server (5 s).
    pub connect_timeout: Duration,
    /// While on a fallback server, how often a higher-priority one is tried
    /// again (5 s).
    pub primary_retry: Duration,
    /// Where to keep the last published resources, if anywhere.
    pub cache_file: Option<PathBuf>,
    /// TLS for `https://` servers (e.g. mesh mTLS to port 15012 with the
    /// workload certificate); `http://` servers are dialed in plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A file holding a bearer token (a bootstrap token of the mesh CA, or
    /// a Kubernetes service-account token), sent as `authorization: Bearer`
    /// on every stream to an `https://` server and re-read for each, so a
    /// rotated token is picked up. Never sent to an `http://` server.
    pub token_file: Option<PathBuf>,
    /// Where the roots of [`XdsClientConfig::tls`] came from (a file, "the
    /// CA's bundle"), named in certificate errors so they say what to fix.
    pub tls_roots: Option<String>,
    /// Speak Delta (incremental) xDS instead of State of the World; a
    /// server that answers UNIMPLEMENTED is spoken to in SotW (default
    /// false: SotW is what every control plane and gRPC client supports).
    pub delta: bool,
    /// Subscribe only to these listeners, by name, and to no other type
    /// (State of the World): a second client for a workload's server
    /// listeners (`xds.istio.io/grpc/lds/inbound/0.0.0.0:8080`), which a
    /// control plane such as istiod sends only to a client that names
    /// them. Its model is the base model with the inbound policy those
    /// listeners state or carry as RBAC. `None` (the default): everything.
    pub only_listeners: Option<Vec<String>>,
}

impl XdsClientConfig {
    /// Defaults for `servers` and `node`.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>, node: NodeInfo) -> Self {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            node,
            mesh_config: MeshConfig::default(),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            does_not_exist_timeout: Duration::from_secs(15),
            missing_cluster_grace: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            primary_retry: Duration::from_secs(5),
            cache_file: None,
            tls: None,
            token_file: None,
            tls_roots: None,
            delta: false,
            only_listeners: None,
        }
    }
}

/// Why the client could not start or did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdsClientError {
    /// No server address was given.
    #[error("no xDS server configured: give at least one address such as http://127.0.0.1:15010")]
    NoServers,
    /// A server address is not a URI tonic can dial.
    #[error("xDS server address {address:?} is invalid ({detail}); use the form http://host:port")]
    BadAddress {
        /// The address as given.
        address: String,
        /// Why it was refused.
        detail: String,
    },
    /// A setting is out of range.
    #[error("invalid xDS client setting: {0}")]
    Config(String),
    /// No model arrived in time and there was no cache to serve.
    #[error("no configuration from xDS server(s) {servers} within {waited:?} (last error: {last_error}); check that the control plane runs and serves this node ({node})")]
    Timeout {
        /// The servers tried, comma separated.
        servers: String,
        /// How long we waited.
        waited: Duration,
        /// The last connection or protocol error.
        last_error: String,
        /// The node id.
        node: String,
    },
    /// The client task is gone.
    #[error("the xDS client task stopped")]
    Stopped,
}

/// A NACK this client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackInfo {
    /// The version rejected.
    pub version: String,
    /// Why (the decode error, naming the resource).
    pub message: String,
}

/// Sync state of one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeSync {
    /// Last version ACKed.
    pub acked_version: Option<String>,
    /// The last NACK, cleared by the next ACK.
    pub last_nack: Option<NackInfo>,
    /// NACKs sent in total.
    pub nacks: u64,
    /// Names subscribed (empty for wildcard).
    pub subscribed: Vec<String>,
    /// Names declared absent by the does-not-exist timer.
    pub does_not_exist: Vec<String>,
}

/// What the client is doing, for `meshctl` and debug endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdsStatus {
    /// The server the stream is open to, if any.
    pub connected: Option<String>,
    /// Per type URL.
    pub types: BTreeMap<String, TypeSync>,
    /// The last connection or stream error.
    pub last_error: Option<String>,
    /// True while the model served came from the on-disk cache.
    pub serving_cache: bool,
    /// Models published so far.
    pub models_published: u64,
}

pub(crate) type SharedStatus = Arc<Mutex<XdsStatus>>;

pub(crate) fn update_status(s: &SharedStatus, f: impl FnOnce(&mut XdsStatus)) {
    let mut g = s.locked();
    f(&mut g);
}

/// A running ADS client; dropping it stops the task (the last model stays
/// readable through receivers already handed out).
#[derive(Debug)]
pub struct XdsClient {
    model: watch::Receiver<Arc<Model>>,
    published: watch::Receiver<u64>,
    status: SharedStatus,
    task: JoinHandle<()>,
    servers: Vec<String>,
    node_id: String,
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl XdsClient {
    /// Checks the config and starts the client task. The model channel
    /// holds an empty model (no outbound services) until the first
    /// consistent set arrives or the cache is served; [`XdsClient::ready`]
    /// waits for that.
    pub fn start(config: XdsClientConfig) -> Result<Self, XdsClientError> {
        if config.servers.is_empty() {
            return Err(XdsClientError::NoServers);
        }
        for s in &config.servers {
            let bad = |detail: String| XdsClientError::BadAddress {
                address: s.clone(),
                detail,
            };
            let uri: tonic::transport::Uri = s.parse().map_err(|e| bad(format!("{e}")))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") if config.tls.is_some() => {}
                Some("https") => return Err(bad(
                    "https needs a TLS config (XdsClientConfig::tls, or a CA on the mesh builder)"
                        .into(),
                )),
                _ => return Err(bad("the scheme must be http or https".into())),
            }
            if uri.host().is_none() {
                return Err(bad("no host".into()));
            }
        }
        if config.backoff_base.is_zero() || config.backoff_max < config.backoff_base {
            return Err(XdsClientError::Config(format!(
                "backoff_base must be positive and backoff_max >= backoff_base (got {:?} and {:?})",
                config.backoff_base, config.backoff_max
            )));
        }
        let node = to_node(&config.node);
        let base = base_model(&config);
        let (model_tx, model) = watch::channel(Arc::new(base.clone()));
        let (published_tx, published) = watch::channel(0u64);
        let status = SharedStatus::default();
        let servers = config.servers.clone();
        let node_id = node.id.clone();
        let task = tokio::spawn(run::run(
            config,
            node,
            base,
            run::Outputs {
                model: model_tx,
                published: published_tx,
                status: status.clone(),
            },
        ));
        Ok(Self {
            model,
            published,
            status,
            task,
            servers,
            node_id,
        })
    }

    /// The live model.
    pub fn model(&self) -> watch::Receiver<Arc<Model>> {
        self.model.clone()
    }

    /// The model right now.
    pub fn current(&self) -> Arc<Model> {
        self.model.borrow().clone()
    }

    /// Waits until a first model is published (from the control plane or
    /// the cache), at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<Arc<Model>, XdsClientError> {
        let mut p = self.published.clone();
        let waited =
            tokio::time::timeout(timeout, async { p.wait_for(|n| *n > 0).await.map(|_| ()) }).await;
        match waited {
            Ok(Ok(())) => Ok(self.current()),
            Ok(Err(_)) => Err(XdsClientError::Stopped),
            Err(_) => Err(XdsClientError::Timeout {
                servers: self.servers.join(", "),
                waited: timeout,
                last_error: self
                    .status()
                    .last_error
                    .unwrap_or_else(|| "none: connected, but the set is incomplete".to_string()),
                node: self.node_id.clone(),
            }),
        }
    }

    /// Sync state now.
    pub fn status(&self) -> XdsStatus {
        self.status.locked().clone()
    }

    /// The node id sent.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// The model before any xDS arrives: the node's client, the mesh settings
/// and the default inbound policy, with no outbound services.
fn base_model(config: &XdsClientConfig) -> Model {
    mesh_core::compile::compile(&[], &config.mesh_config, &config.node.client())
}

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets in `fuzz/`: the client's handling of
/// what a control plane (or a cache file) sends, from bytes to a model,
/// without a network. Built only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use mesh_core::model::Model;
    use std::time::Duration;
    use tokio::time::Instant;

    use super::state::SotwState;

    /// Feeds State-of-the-World responses (or, with `delta`, Delta ones)
    /// to a fresh client state, then builds the model of whatever it
    /// accepted, as the client task does before publishing.
    pub fn sotw(responses: &[DiscoveryResponse]) {
        let now = Instant::now();
        let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(1));
        st.on_connect(now);
        for r in responses {
            st.on_response(r, now);
            publish(&st);
        }
    }

    /// As [`sotw`], over the incremental protocol.
    pub fn delta(responses: &[DeltaDiscoveryResponse]) {
        let now = Instant::now();
        let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(1));
        st.delta_on_connect(now);
        for r in responses {
            st.delta_on_response(r, now);
            publish(&st);
        }
    }

    /// Reads an on-disk cache file and builds its model.
    pub fn cache_file(bytes: &[u8]) {
        if let Ok(res) = super::cache::decode_cache(bytes) {
            let _ = super::run::model_of(base(), &res);
        }
    }

    /// A cache file holding `res`, as the client writes it.
    pub fn cache_bytes(res: &crate::encode::Resources) -> Vec<u8> {
        super::cache::encode_cache(res)
    }

    fn base() -> &'static Model {
        static BASE: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        BASE.get_or_init(|| {
            super::base_model(&super::XdsClientConfig::new(
                ["http://127.0.0.1:1"],
                crate::node::NodeInfo::default(),
            ))
        })
    }

    fn publish(st: &SotwState) {
        st.sync();
        if let Some(res) = st.assemble() {
            let _ = super::run::model_of(base(), &res);
        }
    }
}
