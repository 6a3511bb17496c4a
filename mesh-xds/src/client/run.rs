//! The client task: server choice (priority order with fallback),
//! reconnects with backoff, one ADS stream at a time driving
//! [`SotwState`], and publishing models (and the cache) when the resources
//! change.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_core::model::Model;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::backoff::Backoff;
use super::cache::{load_cache, write_cache};
use super::state::SotwState;
use super::{update_status, SharedStatus, XdsClientConfig};
use crate::encode::Resources;

/// The model a consistent set of accepted resources stands for, on top of
/// `base` (the client's own settings). An error keeps the previous model.
pub(crate) fn model_of(base: &Model, res: &Resources) -> Result<Model, String> {
    // Each resource decoded on arrival; failing together means they
    // contradict each other.
    let decoded = crate::decode::decode(res)
        .map_err(|e| format!("the accepted resources do not decode together: {e}"))?;
    let mut model = base.clone();
    decoded.apply_to(&mut model);
    // Validation NACKs such listeners; this is a cache file's. A model
    // without the inbound policy would let through what it denies.
    super::inbound::apply(res.listeners.iter(), &mut model)
        .map_err(|e| format!("the inbound policy does not decode: {e}"))?;
    // Without the carrier (another control plane) the base model's policy
    // stays: the SDK's MeshConfig with no Telemetry resource.
    if let Some(t) = crate::telemetry_policy::find_telemetry(res.listeners.iter())
        .map_err(|e| format!("the telemetry policy does not decode: {e}"))?
    {
        model.telemetry = Arc::new(t);
    }
    Ok(model)
}

/// Where the task publishes.
pub(crate) struct Outputs {
    pub model: watch::Sender<Arc<Model>>,
    pub published: watch::Sender<u64>,
    pub status: SharedStatus,
}

struct Publisher {
    base: Model,
    out: Outputs,
    last: Option<Resources>,
    cache_file: Option<PathBuf>,
    count: u64,
}

impl Publisher {
    /// Publishes the state's resources if they are consistent and differ
    /// from the last published ones.
    async fn publish(&mut self, state: &SotwState, from_cache: bool) {
        update_status(&self.out.status, |s| s.types = state.sync());
        let Some(res) = state.assemble() else {
            return;
        };
        if self.last.as_ref() == Some(&res) {
            if !from_cache {
                update_status(&self.out.status, |s| s.serving_cache = false);
            }
            return;
        }
        let model = match model_of(&self.base, &res) {
            Ok(m) => m,
            Err(msg) => {
                tracing::error!("{msg}; the previous model keeps serving");
                update_status(&self.out.status, |s| s.last_error = Some(msg));
                return;
            }
        };
        self.count += 1;
        let count = self.count;
        // Status first, so whoever wakes on the new model sees it.
        update_status(&self.out.status, |s| {
            s.models_published = count;
            s.serving_cache = from_cache;
        });
        self.out.model.send_replace(Arc::new(model));
        self.out.published.send_replace(count);
        if !from_cache {
            if let Some(path) = &self.cache_file {
                if let Err(e) = write_cache(path, &res).await {
                    tracing::warn!("{e}; the model is served, but a restart without a control plane will not find it");
                }
            }
        }
        self.last = Some(res);
    }
}

async fn connect(
    address: &str,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
    roots: Option<&str>,
) -> Result<Channel, String> {
    let uri: tonic::transport::Uri = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let host = uri.host().unwrap_or_default().to_string();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let tls = match (uri.scheme_str(), tls) {
        (Some("https"), Some(tls)) => Some(tls.clone()),
        _ => None,
    };
    // tonic speaks HTTP/2 over whatever stream we hand it; TLS is ours, so
    // the endpoint itself is plain `http://`.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("{address}: {e}"))?
        .connect_timeout(timeout)
        // A control plane that vanishes without closing the connection is
        // noticed by keepalive rather than never.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connected = match tls {
        None => endpoint.connect().await,
        Some(tls) => {
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| format!("{address}: TLS server name {host:?}: {e}"))?;
            let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                let tls = tls.clone();
                let name = name.clone();
                let target = authority.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(target.as_str()).await?;
                    let stream = tokio_rustls::TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            });
            endpoint.connect_with_connector(connector).await
        }
    };
    connected.map_err(|e| {
        let mut msg = format!("connect to {address}: {}", chain(&e));
        if let Some(hint) = certificate_hint(&e, &host, roots) {
            msg.push_str("; ");
            msg.push_str(&hint);
        }
        msg
    })
}

/// What to check when the TLS handshake failed on the server's
/// certificate: the roots it must chain to and the name it must carry.
fn certificate_hint(
    e: &(dyn std::error::Error + 'static),
    host: &str,
    roots: Option<&str>,
) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let tls = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| err.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(why)) = tls {
            let roots = roots.unwrap_or("the configured roots");
            return Some(match why {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate does not name {host:?}; dial it by a name its \
                     certificate carries (meshd's: meshd.istio-system.svc, istiod.istio-system.svc, \
                     localhost, 127.0.0.1)"
                ),
                _ => format!(
                    "the server's certificate does not verify with {roots} ({why:?}); give the \
                     mesh root the server's CA issued from (meshd logs its root-cert.pem path)"
                ),
            });
        }
        cur = err.source();
    }
    None
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut s = e.source();
    while let Some(x) = s {
        out.push_str(": ");
        out.push_str(&x.to_string());
        s = x.source();
    }
    out
}

/// The two ADS protocols, as the session loop needs them.
trait Wire {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    fn set_node(req: &mut Self::Req, node: &Node);
    fn on_connect(state: &mut SotwState, now: Instant) -> Vec<Self::Req>;
    fn on_response(
        state: &mut SotwState,
        resp: &Self::Resp,
        now: Instant,
    ) -> (Vec<Self::Req>, bool);
    fn open(
        channel: Channel,
        requests: tonic::Request<UnboundedReceiverStream<Self::Req>>,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Resp>, tonic::Status>> + Send;
}

struct Sotw;

impl Wire for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    fn set_node(req: &mut DiscoveryRequest, node: &Node) {
        req.node = Some(node.clone());
    }
    fn on_connect(state: &mut SotwState, now: Instant) -> Vec<DiscoveryRequest> {
        state.on_connect(now)
    }
    fn on_response(
        state: &mut SotwState,
        resp: &DiscoveryResponse,
        now: Instant,
    ) -> (Vec<DiscoveryRequest>, bool) {
        let step = state.on_response(resp, now);
        (step.requests, step.accepted)
    }
    async fn open(
        channel: Channel,
        requests: tonic::Request<UnboundedReceiverStream<DiscoveryRequest>>,
    ) -> Result<tonic::Streaming<DiscoveryResponse>, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        Ok(client
            .stream_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}

struct Delta;

impl Wire for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    fn set_node(req: &mut DeltaDiscoveryRequest, node: &Node) {
        req.node = Some(node.clone());
    }
    fn on_connect(state: &mut SotwState, now: Instant) -> Vec<DeltaDiscoveryRequest> {
        state.delta_on_connect(now)
    }
    fn on_response(
        state: &mut SotwState,
        resp: &DeltaDiscoveryResponse,
        now: Instant,
    ) -> (Vec<DeltaDiscoveryRequest>, bool) {
        state.delta_on_response(resp, now)
    }
    async fn open(
        channel: Channel,
        requests: tonic::Request<UnboundedReceiverStream<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        Ok(client
            .delta_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}

/// The `authorization` value for a stream to server `idx`: the token
/// file's content, read now, for an `https://` server only.
async fn bearer(
    config: &XdsClientConfig,
    idx: usize,
) -> Result<Option<tonic::metadata::AsciiMetadataValue>, String> {
    let server = &config.servers[idx];
    let Some(path) = &config.token_file else {
        return Ok(None);
    };
    if !server.starts_with("https://") {
        return Ok(None);
    }
    let token = tokio::fs::read_to_string(path).await.map_err(|e| {
        format!(
            "xDS server {server}: cannot read the token file {}: {e}",
            path.display()
        )
    })?;
    format!("Bearer {}", token.trim())
        .parse()
        .map(Some)
        .map_err(|_| {
            format!(
                "xDS server {server}: the token in {} has characters not allowed in gRPC metadata",
                path.display()
            )
        })
}

enum End {
    /// The stream failed or ended.
    Failed(String),
    /// The server does not speak Delta.
    NoDelta,
    /// A higher-priority server answered while on a fallback one.
    Switch(usize, Channel),
}

type Probe = Pin<Box<dyn Future<Output = Option<(usize, Channel)>> + Send>>;

struct Session<'a> {
    config: &'a XdsClientConfig,
    node: &'a Node,
    state: &'a mut SotwState,
    publisher: &'a mut Publisher,
}

impl Session<'_> {
    /// Runs one stream on `channel` (server `idx`) until it ends; returns
    /// whether any response arrived, and why it ended.
    async fn run<W: Wire>(&mut self, idx: usize, channel: Channel) -> (bool, End) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut first = true;
        let mut send = |mut req: W::Req| {
            // The node goes in the first request of a stream only.
            if std::mem::take(&mut first) {
                W::set_node(&mut req, self.node);
            }
            // The receiver lives until this function returns.
            let _ = tx.send(req);
        };
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        match bearer(self.config, idx).await {
            Ok(Some(value)) => {
                request.metadata_mut().insert("authorization", value);
            }
            Ok(None) => {}
            Err(e) => return (false, End::Failed(e)),
        }
        for r in W::on_connect(self.state, Instant::now()) {
            send(r);
        }
        let opened =
            tokio::time::timeout(self.config.connect_timeout, W::open(channel, request)).await;
        let mut stream = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => return (false, End::NoDelta),
            Ok(Err(s)) => {
                return (
                    false,
                    End::Failed(format!(
                        "ADS stream to {} refused: {:?}: {}",
                        self.config.servers[idx],
                        s.code(),
                        s.message()
                    )),
                )
            }
            Err(_) => {
                return (
                    false,
                    End::Failed(format!(
                        "ADS stream to {}: no response headers within {:?}",
                        self.config.servers[idx], self.config.connect_timeout
                    )),
                )
            }
        };
        let server = self.config.servers[idx].clone();
        update_status(&self.publisher.out.status, |s| {
            s.connected = Some(server.clone());
        });
        let mut received = false;
        let mut probe_tick = tokio::time::interval_at(
            Instant::now() + self.config.primary_retry,
            self.config.primary_retry,
        );
        let mut probe: Option<Probe> = None;
        loop {
            let deadline = self.state.next_deadline();
            let timer = tokio::time::sleep_until(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
            );
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        received = true;
                        let (requests, accepted) = W::on_response(self.state, &resp, Instant::now());
                        for r in requests {
                            send(r);
                        }
                        if accepted {
                            self.publisher.publish(self.state, false).await;
                        } else {
                            let sync = self.state.sync();
                            update_status(&self.publisher.out.status, |s| s.types = sync);
                        }
                    }
                    Ok(None) => {
                        return (received, End::Failed(format!("{server} closed the ADS stream")));
                    }
                    Err(s) => {
                        return (
                            received,
                            End::Failed(format!("ADS stream to {server}: {:?}: {}", s.code(), s.message())),
                        );
                    }
                },
                () = timer, if deadline.is_some() => {
                    if self.state.on_timer(Instant::now()) {
                        self.publisher.publish(self.state, false).await;
                    }
                }
                _ = probe_tick.tick(), if idx > 0 && probe.is_none() => {
                    let higher: Vec<String> = self.config.servers[..idx].to_vec();
                    let timeout = self.config.connect_timeout;
                    let tls = self.config.tls.clone();
                    probe = Some(Box::pin(async move {
                        for (j, addr) in higher.iter().enumerate() {
                            if let Ok(ch) = connect(addr, timeout, tls.as_ref(), None).await {
                                return Some((j, ch));
                            }
                        }
                        None
                    }));
                }
                found = async { probe.as_mut()?.await }, if probe.is_some() => {
                    probe = None;
                    if let Some((j, ch)) = found {
                        tracing::info!(server = %self.config.servers[j], "a higher-priority xDS server is back; switching to it");
                        return (received, End::Switch(j, ch));
                    }
                }
            }
        }
    }
}

/// The client task.
pub(crate) async fn run(config: XdsClientConfig, node: Node, base: Model, out: Outputs) {
    let mut state = match &config.only_listeners {
        Some(names) => SotwState::listeners_only(
            config.does_not_exist_timeout,
            names.iter().cloned().collect(),
        ),
        None => SotwState::new(config.does_not_exist_timeout, config.missing_cluster_grace),
    };
    let mut publisher = Publisher {
        base,
        out,
        last: None,
        cache_file: config.cache_file.clone(),
        count: 0,
    };
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    let mut cache_checked = false;
    let mut switch_to: Option<(usize, Channel)> = None;
    // Servers that answered UNIMPLEMENTED to Delta: spoken to in SotW.
    let mut sotw_only =
        vec![!config.delta || config.only_listeners.is_some(); config.servers.len()];
    loop {
        let mut worked = false;
        let mut idx = 0;
        while idx < config.servers.len() {
            let channel = match switch_to.take() {
                Some((j, ch)) => {
                    idx = j;
                    ch
                }
                None => match connect(
                    &config.servers[idx],
                    config.connect_timeout,
                    config.tls.as_ref(),
                    config.tls_roots.as_deref(),
                )
                .await
                {
                    Ok(ch) => ch,
                    Err(e) => {
                        tracing::warn!("xDS server unreachable: {e}");
                        update_status(&publisher.out.status, |s| s.last_error = Some(e));
                        idx += 1;
                        continue;
                    }
                },
            };
            let mut session = Session {
                config: &config,
                node: &node,
                state: &mut state,
                publisher: &mut publisher,
            };
            let (received, end) = if sotw_only[idx] {
                session.run::<Sotw>(idx, channel).await
            } else {
                session.run::<Delta>(idx, channel).await
            };
            state.on_disconnect();
            update_status(&publisher.out.status, |s| s.connected = None);
            worked |= received;
            match end {
                End::NoDelta => {
                    tracing::info!(server = %config.servers[idx], "the xDS server does not support Delta; using State of the World");
                    sotw_only[idx] = true;
                }
                End::Switch(j, ch) => {
                    switch_to = Some((j, ch));
                    idx = j;
                }
                End::Failed(e) => {
                    tracing::warn!("{e}; the last good model keeps serving");
                    update_status(&publisher.out.status, |s| s.last_error = Some(e));
                    if received {
                        // It worked: reconnect from the top after a pause.
                        break;
                    }
                    idx += 1;
                }
            }
        }
        if !cache_checked && publisher.count == 0 {
            cache_checked = true;
            if let Some(path) = &config.cache_file {
                match load_cache(path).await {
                    Ok(Some(r)) => {
                        tracing::warn!(path = %path.display(), "no xDS server reachable; serving the cached configuration");
                        state.load(r);
                        publisher.publish(&state, true).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        if worked {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
