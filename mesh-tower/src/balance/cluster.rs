//! The live state of one cluster: balancer, outlier detector, limits and
//! connection pools, updated in place when the model changes so that
//! surviving endpoints keep their state and unchanged settings keep their
//! pools (a changed DestinationRule TLS block starts new pools).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mesh_core::config::networking::destination_rule::{ClientTlsSettings, ConnectionPoolSettings};
use mesh_core::lb::{Balancer, ClientInfo, HashSource, LbConfig, LbEndpoint, Locality, SplitMix64};
use mesh_core::model::{Cluster, Model};
use mesh_core::outlier::{OutlierConfig, OutlierDetector};

use super::connector::{Connector, EndpointMeta, Keepalive, PoolConnector, PoolTarget};
use super::limits::Limits;
use super::stats::ClusterStats;
use crate::MeshBody;

/// Istio's default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default idle timeout of upstream connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which HTTP version a pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Http1,
    Http2,
}

pub(crate) type HttpClient = Client<PoolConnector, MeshBody>;

/// The mutable part, behind one short-held lock.
pub(crate) struct Core {
    pub seen: Weak<Model>,
    pub cluster: Option<Cluster>,
    pub lb: Balancer<SocketAddr>,
    pub outlier: Option<OutlierDetector<SocketAddr>>,
    pub rng: SplitMix64,
    pub hash: Option<HashSource>,
    /// The balancer's endpoints in its order.
    pub targets: Vec<Target>,
}

/// One endpoint as the request path needs it, built when the endpoints
/// change rather than per request.
#[derive(Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// The URI authority a request to it carries.
    pub authority: Option<Authority>,
    /// Requests in flight to it. Shared with those requests, which
    /// release their count when their response ends without taking the
    /// cluster lock, and carried over when the endpoints change.
    pub active: Arc<AtomicU32>,
}

/// The targets of `eps`; an endpoint already in `old` keeps its count of
/// requests in flight.
fn targets(eps: &[LbEndpoint<SocketAddr>], old: &[Target]) -> Vec<Target> {
    eps.iter()
        .map(|e| match old.iter().find(|t| t.addr == e.key) {
            Some(t) => t.clone(),
            None => Target {
                addr: e.key,
                authority: Authority::from_maybe_shared(bytes::Bytes::from(e.key.to_string())).ok(),
                active: Arc::default(),
            },
        })
        .collect()
}

pub(crate) struct ClusterState {
    pub name: String,
    pub core: Mutex<Core>,
    pub limits: RwLock<Arc<Limits>>,
    pub stats: Arc<ClusterStats>,
    pools: Mutex<Pools>,
    meta: Arc<RwLock<HashMap<SocketAddr, EndpointMeta>>>,
    connector: Arc<dyn Connector>,
}

struct Pools {
    settings: Option<ConnectionPoolSettings>,
    host: Arc<str>,
    tls: Option<Arc<ClientTlsSettings>>,
    http1: Option<HttpClient>,
    http2: Option<HttpClient>,
}

impl Pools {
    fn client(&mut self, proto: Proto) -> &mut Option<HttpClient> {
        match proto {
            Proto::Http1 => &mut self.http1,
            Proto::Http2 => &mut self.http2,
        }
    }
}

/// The client's locality: an explicit one, else its topology labels.
pub(crate) fn client_info(model: &Model, locality: Option<&str>) -> ClientInfo {
    ClientInfo {
        locality: locality
            .map(Locality::parse)
            .unwrap_or_else(|| Locality::from_labels(&model.client.labels)),
        labels: model.client.labels.clone(),
    }
}

/// Endpoints as the balancer sees them; `resolved` gives addresses for
/// endpoints named by host name (those unresolved are left out).
pub(crate) fn lb_endpoints(
    cluster: &Cluster,
    resolved: &HashMap<(String, u16), SocketAddr>,
) -> Vec<LbEndpoint<SocketAddr>> {
    let mut seen = std::collections::HashSet::new();
    cluster
        .endpoints
        .iter()
        .filter_map(|e| {
            let addr = match e.address.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, e.port),
                Err(_) => *resolved.get(&(e.address.clone(), e.port))?,
            };
            seen.insert(addr).then(|| LbEndpoint {
                key: addr,
                name: addr.to_string(),
                weight: e.weight,
                locality: e
                    .locality
                    .as_deref()
                    .map(Locality::parse)
                    .unwrap_or_default(),
                labels: e.labels.clone(),
            })
        })
        .collect()
}

fn outlier_config(c: &Cluster) -> Option<OutlierConfig> {
    c.policy
        .outlier_detection
        .as_ref()
        .map(OutlierConfig::from_istio)
}

fn hash_source(c: &Cluster) -> Option<HashSource> {
    c.policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.consistent_hash.as_ref())
        .and_then(HashSource::from_istio)
}

impl ClusterState {
    pub fn new(
        cluster: &Cluster,
        seen: Weak<Model>,
        client: ClientInfo,
        eps: Vec<LbEndpoint<SocketAddr>>,
        connector: Arc<dyn Connector>,
        seed: u64,
    ) -> Self {
        let lbc = LbConfig::from_istio(
            cluster.policy.load_balancer.as_ref(),
            cluster.policy.outlier_detection.as_ref(),
        );
        let keys: Vec<SocketAddr> = eps.iter().map(|e| e.key).collect();
        let targets = targets(&eps, &[]);
        let outlier = outlier_config(cluster).map(|c| {
            let mut d = OutlierDetector::new(c);
            d.update_endpoints(&keys);
            d
        });
        let state = Self {
            name: cluster.name.clone(),
            core: Mutex::new(Core {
                seen,
                cluster: Some(cluster.clone()),
                lb: Balancer::new(lbc, client, eps),
                outlier,
                rng: SplitMix64(seed),
                hash: hash_source(cluster),
                targets,
            }),
            limits: RwLock::new(Arc::new(Limits::new(
                cluster.policy.connection_pool.as_ref(),
            ))),
            stats: Arc::new(ClusterStats::default()),
            pools: Mutex::new(Pools {
                settings: cluster.policy.connection_pool.clone(),
                host: Arc::from(cluster.host.as_str()),
                tls: cluster.policy.tls.clone().map(Arc::new),
                http1: None,
                http2: None,
            }),
            meta: Arc::new(RwLock::new(HashMap::new())),
            connector,
        };
        state.set_meta(cluster);
        state
    }

    fn set_meta(&self, cluster: &Cluster) {
        let meta: HashMap<SocketAddr, EndpointMeta> = cluster
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip = e.address.parse::<IpAddr>().ok()?;
                Some((
                    SocketAddr::new(ip, e.port),
                    EndpointMeta {
                        identity: e.identity.clone(),
                        tls_mode: Some(e.tls_mode),
                    },
                ))
            })
            .collect();
        if let Ok(mut m) = self.meta.write() {
            *m = meta;
        }
    }

    /// True when `model` is not the one the state was last checked against
    /// and its cluster differs from the state's.
    pub fn needs_update(core: &mut Core, model: &Arc<Model>, cluster: &Cluster) -> bool {
        if Weak::ptr_eq(&core.seen, &Arc::downgrade(model)) {
            return false;
        }
        if core.cluster.as_ref() == Some(cluster) {
            core.seen = Arc::downgrade(model);
            return false;
        }
        true
    }

    /// Applies a changed cluster: endpoints and settings are replaced,
    /// per-endpoint state of surviving endpoints is kept, and pools are
    /// rebuilt only when the connection-pool settings changed.
    pub fn update(
        &self,
        core: &mut Core,
        model: &Arc<Model>,
        cluster: &Cluster,
        client: ClientInfo,
        eps: Vec<LbEndpoint<SocketAddr>>,
        now: Instant,
    ) {
        let lbc = LbConfig::from_istio(
            cluster.policy.load_balancer.as_ref(),
            cluster.policy.outlier_detection.as_ref(),
        );
        let keys: Vec<SocketAddr> = eps.iter().map(|e| e.key).collect();
        core.targets = targets(&eps, &core.targets);
        core.lb.update(lbc, client, eps, now);
        match (outlier_config(cluster), core.outlier.as_mut()) {
            (Some(c), Some(d)) => {
                d.set_config(c);
                d.update_endpoints(&keys);
            }
            (Some(c), None) => {
                let mut d = OutlierDetector::new(c);
                d.update_endpoints(&keys);
                core.outlier = Some(d);
            }
            (None, _) => core.outlier = None,
        }
        core.hash = hash_source(cluster);
        let old_pool = core
            .cluster
            .as_ref()
            .map(|c| c.policy.connection_pool.clone());
        if old_pool.as_ref() != Some(&cluster.policy.connection_pool) {
            if let Ok(mut l) = self.limits.write() {
                *l = Arc::new(Limits::new(cluster.policy.connection_pool.as_ref()));
            }
        }
        if let Ok(mut p) = self.pools.lock() {
            if p.settings != cluster.policy.connection_pool
                || *p.host != *cluster.host
                || p.tls.as_deref() != cluster.policy.tls.as_ref()
            {
                p.settings = cluster.policy.connection_pool.clone();
                p.host = Arc::from(cluster.host.as_str());
                p.tls = cluster.policy.tls.clone().map(Arc::new);
                p.http1 = None;
                p.http2 = None;
            }
        }
        self.set_meta(cluster);
        core.cluster = Some(cluster.clone());
        core.seen = Arc::downgrade(model);
    }

    /// Sends `req` on the pooled client for `proto` (built on first use).
    /// The returned future owns what it needs, so the pool lock is only
    /// held while the request is handed over, and the client is not cloned.
    pub fn send(
        &self,
        proto: Proto,
        req: http::Request<MeshBody>,
    ) -> Option<hyper_util::client::legacy::ResponseFuture> {
        let mut pools = self.pools.lock().ok()?;
        if let Some(c) = pools.client(proto) {
            return Some(c.request(req));
        }
        let client = build_client(
            proto,
            pools.settings.as_ref(),
            PoolConnector::new(PoolTarget {
                connector: self.connector.clone(),
                cluster: Arc::from(self.name.as_str()),
                host: pools.host.clone(),
                meta: self.meta.clone(),
                connect_timeout: connect_timeout(pools.settings.as_ref()),
                keepalive: keepalive(pools.settings.as_ref()),
                stats: self.stats.clone(),
                tls: pools.tls.clone(),
                http2: proto == Proto::Http2,
                count_requests: pools
                    .settings
                    .as_ref()
                    .and_then(|c| c.http.as_ref())
                    .and_then(|h| h.max_requests_per_connection)
                    .is_some_and(|m| m > 0),
            }),
        );
        let sent = client.request(req);
        *pools.client(proto) = Some(client);
        Some(sent)
    }

    pub fn limits(&self) -> Option<Arc<Limits>> {
        self.limits.read().ok().map(|l| l.clone())
    }
}

fn connect_timeout(cp: Option<&ConnectionPoolSettings>) -> Duration {
    cp.and_then(|c| c.tcp.as_ref())
        .and_then(|t| t.connect_timeout)
        .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.get())
}

fn keepalive(cp: Option<&ConnectionPoolSettings>) -> Option<Keepalive> {
    let ka = cp?.tcp.as_ref()?.tcp_keepalive.as_ref()?;
    Some(Keepalive {
        time: ka.time.map(|d| d.get()),
        interval: ka.interval.map(|d| d.get()),
        probes: ka.probes,
    })
}

/// hyper-util's pooled client with the cluster's pool settings: the idle
/// timeout (the shorter of `http.idleTimeout` and `tcp.idleTimeout`,
/// default 1h, `0s` on TCP disables it), at most `maxConnections` idle
/// connections per endpoint, and no reuse when `maxRequestsPerConnection`
/// is 1.
pub(crate) fn build_client(
    proto: Proto,
    cp: Option<&ConnectionPoolSettings>,
    conn: PoolConnector,
) -> HttpClient {
    let http = cp.and_then(|c| c.http.as_ref());
    let tcp = cp.and_then(|c| c.tcp.as_ref());
    let mut idle = http
        .and_then(|h| h.idle_timeout)
        .map_or(DEFAULT_IDLE_TIMEOUT, |d| d.get());
    let mut idle_off = false;
    if let Some(t) = tcp.and_then(|t| t.idle_timeout) {
        if t.get().is_zero() {
            idle_off = http.and_then(|h| h.idle_timeout).is_none();
        } else {
            idle = idle.min(t.get());
        }
    }
    let mut max_idle = tcp
        .and_then(|t| t.max_connections)
        .map_or(usize::MAX, |m| m as usize);
    if http.and_then(|h| h.max_requests_per_connection) == Some(1) {
        max_idle = 0;
    }
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_timer(TokioTimer::new())
        .pool_idle_timeout(if idle_off { None } else { Some(idle) })
        .pool_max_idle_per_host(max_idle)
        .http2_only(proto == Proto::Http2);
    b.build(conn)
}
