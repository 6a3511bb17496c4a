//! The live state of one cluster: balancer, outlier detector, limits and
//! connection pools, updated in place when the model changes so that
//! surviving endpoints keep their state and unchanged settings keep their
//! pools (a changed DestinationRule TLS block starts new pools).

use mesh_core::sync::{LockExt, RwLockExt};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use mesh_core::config::networking::destination_rule::{ClientTlsSettings, ConnectionPoolSettings};
use mesh_core::lb::{Balancer, ClientInfo, HashSource, LbConfig, LbEndpoint, Locality, SplitMix64};
use mesh_core::model::{Cluster, Model};
use mesh_core::outlier::{OutlierConfig, OutlierDetector};

use super::connector::{Connector, Dialer, EndpointMeta, Keepalive};
use super::dns::{self, Names};
use super::limits::Limits;
use super::pool::{EndpointPool, PoolConfig};
use super::stats::ClusterStats;

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
    /// The circuit breakers.
    pub limits: Arc<Limits>,
    /// Requests admitted at once (those that waited for a slot count in
    /// the stats): counted here, under the lock the pick holds anyway,
    /// rather than on a line of its own every request writes.
    pub requests: u64,
    /// True when `cluster` has host-named endpoints.
    pub names: bool,
    /// Their answers, while a refresh task keeps them fresh (`dns`).
    pub dns: Option<Names>,
}

/// One endpoint as the request path needs it, built when the endpoints
/// change rather than per request.
#[derive(Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// What requests to it share with the cluster state; carried over when
    /// the endpoints change.
    pub shared: Arc<TargetShared>,
    /// Its connections.
    pub pool: Arc<EndpointPool>,
}

/// The per-endpoint state a request holds until its response ends, so
/// that it can release it without the cluster lock.
pub(crate) struct TargetShared {
    /// The URI authority an HTTP/2 request to it carries.
    pub authority: Option<Authority>,
    /// Requests in flight to it.
    pub active: AtomicU32,
    /// True while outlier detection may hold a failure streak for it: a
    /// success needs the cluster lock only to end a streak.
    pub failing: AtomicBool,
}

/// The targets of `eps`; an endpoint already in `old` keeps its shared
/// state, and its connections unless the pool settings changed.
fn targets(eps: &[LbEndpoint<SocketAddr>], old: &[Target], pools: &mut Pools) -> Vec<Target> {
    let old: HashMap<SocketAddr, &Target> = old.iter().map(|t| (t.addr, t)).collect();
    let targets: Vec<Target> = eps
        .iter()
        .map(|e| Target {
            addr: e.key,
            shared: match old.get(&e.key) {
                Some(t) => t.shared.clone(),
                None => Arc::new(TargetShared {
                    authority: Authority::from_maybe_shared(bytes::Bytes::from(e.key.to_string()))
                        .ok(),
                    active: AtomicU32::new(0),
                    failing: AtomicBool::new(false),
                }),
            },
            pool: pools.endpoint(e.key),
        })
        .collect();
    let live: std::collections::HashSet<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    pools.by_addr.retain(|a, _| live.contains(a));
    targets
}

pub(crate) struct ClusterState {
    pub name: String,
    /// Set when the endpoint stage forgets the state (its cluster left the
    /// model): its DNS refresh stops.
    pub retired: AtomicBool,
    pub core: Mutex<Core>,
    pub stats: Arc<ClusterStats>,
    pools: Mutex<Pools>,
    meta: Arc<RwLock<HashMap<SocketAddr, EndpointMeta>>>,
    connector: Arc<dyn Connector>,
}

/// The cluster's pool settings and its endpoints' pools.
pub(crate) struct Pools {
    settings: Option<ConnectionPoolSettings>,
    host: Arc<str>,
    tls: Option<Arc<ClientTlsSettings>>,
    config: Arc<PoolConfig>,
    by_addr: HashMap<SocketAddr, Arc<EndpointPool>>,
}

impl Pools {
    /// The pool of `addr`, made on first use.
    pub fn endpoint(&mut self, addr: SocketAddr) -> Arc<EndpointPool> {
        self.by_addr
            .entry(addr)
            .or_insert_with(|| Arc::new(EndpointPool::new(addr, self.config.clone())))
            .clone()
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

/// Endpoints as the balancer sees them; `names` gives the addresses of
/// endpoints named by host name (every address of the answer, or its
/// first for `DNS_ROUND_ROBIN`; names without one are left out). An
/// address met twice counts once.
pub(crate) fn lb_endpoints(
    cluster: &Cluster,
    names: Option<&Names>,
) -> Vec<LbEndpoint<SocketAddr>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(cluster.endpoints.len());
    for e in &cluster.endpoints {
        let ip;
        let addrs: &[SocketAddr] = match e.address.parse::<IpAddr>() {
            Ok(a) => {
                ip = [SocketAddr::new(a, e.port)];
                &ip
            }
            Err(_) => names.map_or(&[][..], |n| n.addrs(cluster.resolution, &e.address, e.port)),
        };
        for &addr in addrs {
            if seen.insert(addr) {
                out.push(LbEndpoint {
                    key: addr,
                    name: addr.to_string(),
                    weight: e.weight,
                    locality: e
                        .locality
                        .as_deref()
                        .map(Locality::parse)
                        .unwrap_or_default(),
                    labels: e.labels.clone(),
                });
            }
        }
    }
    out
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
    /// The state of `cluster`, its host names answered by `dns`.
    pub fn new(
        cluster: &Cluster,
        seen: Weak<Model>,
        client: ClientInfo,
        dns: Option<Names>,
        connector: Arc<dyn Connector>,
        seed: u64,
    ) -> Self {
        let eps = lb_endpoints(cluster, dns.as_ref());
        let lbc = LbConfig::from_istio(
            cluster.policy.load_balancer.as_ref(),
            cluster.policy.outlier_detection.as_ref(),
        );
        let keys: Vec<SocketAddr> = eps.iter().map(|e| e.key).collect();
        let stats = Arc::new(ClusterStats::default());
        let meta = Arc::new(RwLock::new(HashMap::new()));
        let mut pools = Pools {
            settings: cluster.policy.connection_pool.clone(),
            host: Arc::from(cluster.host.as_str()),
            tls: cluster.policy.tls.clone().map(Arc::new),
            config: pool_config(
                &cluster.name,
                cluster,
                connector.clone(),
                meta.clone(),
                stats.clone(),
            ),
            by_addr: HashMap::new(),
        };
        let targets = targets(&eps, &[], &mut pools);
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
                limits: Arc::new(Limits::new(cluster.policy.connection_pool.as_ref())),
                requests: 0,
                names: dns::has_names(cluster),
                dns,
            }),
            retired: AtomicBool::new(false),
            stats,
            pools: Mutex::new(pools),
            meta,
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
        *self.meta.write_locked() = meta;
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

    /// Applies a changed cluster: endpoints (host names as `core.dns`
    /// answers them) and settings are replaced, per-endpoint state of
    /// surviving endpoints is kept, and pools are rebuilt only when the
    /// connection-pool settings changed.
    pub fn update(
        &self,
        core: &mut Core,
        model: &Arc<Model>,
        cluster: &Cluster,
        client: ClientInfo,
        now: Instant,
    ) {
        let eps = lb_endpoints(cluster, core.dns.as_ref());
        let lbc = LbConfig::from_istio(
            cluster.policy.load_balancer.as_ref(),
            cluster.policy.outlier_detection.as_ref(),
        );
        let keys: Vec<SocketAddr> = eps.iter().map(|e| e.key).collect();
        {
            let mut p = self.pools.locked();
            if p.settings != cluster.policy.connection_pool
                || *p.host != *cluster.host
                || p.tls.as_deref() != cluster.policy.tls.as_ref()
            {
                p.settings = cluster.policy.connection_pool.clone();
                p.host = Arc::from(cluster.host.as_str());
                p.tls = cluster.policy.tls.clone().map(Arc::new);
                p.config = pool_config(
                    &self.name,
                    cluster,
                    self.connector.clone(),
                    self.meta.clone(),
                    self.stats.clone(),
                );
                // New settings, new connections: the old ones close once
                // the requests they carry end.
                p.by_addr.clear();
            }
            core.targets = targets(&eps, &core.targets, &mut p);
        }
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
            core.limits = Arc::new(Limits::new(cluster.policy.connection_pool.as_ref()));
        }
        self.set_meta(cluster);
        core.names = dns::has_names(cluster);
        core.cluster = Some(cluster.clone());
        core.seen = Arc::downgrade(model);
    }

    /// Brings the endpoints up to date with new DNS answers in `core.dns`
    /// (the cluster and its settings unchanged): as [`Self::update`] does,
    /// endpoints that stay keep their balancer and outlier state and their
    /// pools; removed ones leave, their pools closing once the requests
    /// they carry end. Nothing happens when the endpoints are the same.
    pub fn sync_endpoints(&self, core: &mut Core, now: Instant) {
        let Some(cluster) = core.cluster.as_ref() else {
            return;
        };
        let eps = lb_endpoints(cluster, core.dns.as_ref());
        if eps == core.lb.endpoints() {
            return;
        }
        let keys: Vec<SocketAddr> = eps.iter().map(|e| e.key).collect();
        core.targets = targets(&eps, &core.targets, &mut self.pools.locked());
        let (lbc, client) = (core.lb.config().clone(), core.lb.client().clone());
        core.lb.update(lbc, client, eps, now);
        if let Some(d) = core.outlier.as_mut() {
            d.update_endpoints(&keys);
        }
    }

    /// Forgets the state: its DNS refresh stops.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// The pool of `addr`, for requests to an address no target holds
    /// (passthrough).
    pub fn pool_for(&self, addr: SocketAddr) -> Arc<EndpointPool> {
        self.pools.locked().endpoint(addr)
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

/// The pool settings of `cluster`: the idle timeout (the shorter of
/// `http.idleTimeout` and `tcp.idleTimeout`, default 1h, `0s` on TCP
/// disables it), at most `maxConnections` idle connections per endpoint,
/// `maxRequestsPerConnection` (1 also disables idle reuse), and the
/// connect timeout and keepalive for the dialer.
fn pool_config(
    name: &str,
    cluster: &Cluster,
    connector: Arc<dyn Connector>,
    meta: Arc<RwLock<HashMap<SocketAddr, EndpointMeta>>>,
    stats: Arc<ClusterStats>,
) -> Arc<PoolConfig> {
    let cp = cluster.policy.connection_pool.as_ref();
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
    let max_requests = http
        .and_then(|h| h.max_requests_per_connection)
        .filter(|m| *m > 0);
    let mut max_idle = tcp
        .and_then(|t| t.max_connections)
        .map_or(usize::MAX, |m| m as usize);
    if max_requests == Some(1) {
        max_idle = 0;
    }
    Arc::new(PoolConfig {
        dialer: Dialer {
            connector,
            cluster: Arc::from(name),
            host: Arc::from(cluster.host.as_str()),
            meta,
            connect_timeout: connect_timeout(cp),
            keepalive: keepalive(cp),
            stats,
            tls: cluster.policy.tls.clone().map(Arc::new),
        },
        idle_timeout: (!idle_off).then_some(idle),
        max_idle,
        max_requests,
    })
}
