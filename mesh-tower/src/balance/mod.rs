//! The endpoint stage of the client: given a request whose cluster routing
//! already chose (the [`Upstream`] extension), pick the endpoint, enforce
//! the cluster's connection-pool limits and send the request to it over a
//! pooled HTTP/1.1 or HTTP/2 connection.
//!
//! [`Endpoints`] is one shared service (clone it freely) holding per-cluster
//! state: the load balancer and outlier detector from `mesh_core::lb` and
//! `mesh_core::outlier`, circuit-breaker counters, and one connection pool
//! per endpoint (`pool`, on hyper's connection API). State follows the model each request
//! carries: when a cluster changes, surviving endpoints keep their outlier
//! and balancer state, and pools are rebuilt only if the connection-pool
//! settings changed.
//!
//! Per request:
//! - no cluster, no endpoints, or no healthy endpoint: `UH` (503);
//! - consistent hash key from header, cookie (generated, with a
//!   `Set-Cookie` on the response, when absent and a TTL is configured),
//!   source IP ([`SourceIp`] extension; without it the client's own
//!   identity, as a sidecar would see its one pod IP) or query parameter;
//! - retries prefer endpoints not in [`Upstream::tried`], and the chosen one
//!   is appended to it;
//! - over a limit: `UO` (503) at once; connect failure or timeout: `UF`
//!   (503); a reset after connecting: `UR` (503); `UF` and `UR` count as
//!   local-origin failures for outlier detection, 5xx responses (and
//!   trailers-only gRPC errors, mapped to HTTP as Envoy does) as 5xx;
//! - the URI is rewritten to the endpoint address, the `Host` header keeps
//!   the authority the client asked for (HTTP/2 sends the endpoint address
//!   as `:authority`, with the original `host` header alongside);
//! - the response carries [`ServedBy`].
//!
//! `maxRequestsPerConnection` retires a connection once it has served that
//! many requests; 1 also disables idle reuse.
//!
//! Protocol: HTTP/2 with prior knowledge (h2c) for `http2`/`grpc` ports and
//! for gRPC requests; HTTP/2 for everything when `h2UpgradePolicy: UPGRADE`;
//! the request's own version with `useClientProtocol: true`; HTTP/1.1
//! otherwise.
//!
//! Model swaps: a request is served from the endpoints of the model it
//! carries. A request still carrying an older model brings the cluster
//! state back to that model's endpoints for its pick and the next request
//! on the newer model moves it forward again; endpoints present in both
//! keep their outlier and balancer state either way, so the only cost is
//! churn of the balancer's per-endpoint positions.
//!
//! Host-named endpoints (DNS clusters) are looked up with the stage's
//! [`Resolve`] (default [`SystemResolver`]) before the cluster's first
//! request, then again in the background as Envoy does (`dns`): every
//! refresh interval or TTL, keeping the last good answer when a lookup
//! fails, and changing the endpoint set in place.
//!
//! Errors come back as `Err(BoxError)` holding a [`MeshError`] (the routing
//! stage retries on them and turns them into responses).

mod body;
mod cluster;
mod connector;
mod dns;
mod flight;
mod limits;
mod pool;
mod request;
mod resolve;
mod stats;

use mesh_core::sync::LockExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, Version};
use mesh_core::model::{Cluster, ClusterPolicy, Model};
use mesh_core::registry::Resolution;

use body::GuardedBody;
pub use cluster::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
pub use connector::{BoxIo, ConnectFuture, ConnectTarget, Connector, Io, Keepalive, TcpConnector};
pub use dns::{DEFAULT_REFRESH, LOOKUP_TIMEOUT, MIN_TTL};
pub use flight::EndpointsFuture;
use flight::{ActiveCount, Flight, HostsNow, Pick, Waiting};
pub use stats::{ClusterStats, StatsSnapshot};

use cluster::{client_info, ClusterState, Core, Proto};
use dns::Names;
use limits::Admit;
pub use request::SourceIp;
use request::{choose_proto, prepare, request_hash};
pub use resolve::{Answer, Resolve, ResolveFuture, SystemResolver};

use crate::body as mesh_body;
use crate::thread_cache::ThreadCache;
use crate::{BoxError, MeshBody, MeshError, ModelRx, ResponseFlag, ServedBy, Upstream};

/// Builds an [`Endpoints`].
pub struct EndpointsBuilder {
    connector: Arc<dyn Connector>,
    locality: Option<String>,
    resolver: Arc<dyn Resolve>,
    model: Option<ModelRx>,
    seed: Option<u64>,
}

impl EndpointsBuilder {
    /// Opens connections with `connector` (default [`TcpConnector`]).
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// The client's locality `region/zone/subzone` (default: from the
    /// model client's `topology.kubernetes.io/region`/`zone` and
    /// `topology.istio.io/subzone` labels).
    pub fn locality(mut self, locality: impl Into<String>) -> Self {
        self.locality = Some(locality.into());
        self
    }

    /// Looks up host-named endpoints (DNS clusters, passthrough to a host
    /// name) with `resolver` (default [`SystemResolver`]).
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The live model, followed by the DNS refresh of each cluster so that
    /// it stops as soon as its cluster leaves the model (without it, it
    /// stops when a request carrying such a model arrives).
    pub fn model(mut self, model: ModelRx) -> Self {
        self.model = Some(model);
        self
    }

    /// Seeds the random picks (load balancing, hash salts) so a run can
    /// be replayed, e.g. a statistical test printing its seed (default:
    /// from the clock).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The service.
    pub fn build(self) -> Endpoints {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64)
        });
        Endpoints {
            inner: Arc::new(Inner {
                clusters: Mutex::new(HashMap::default()),
                generation: AtomicU64::new(0),
                id: {
                    static NEXT: AtomicU64 = AtomicU64::new(0);
                    NEXT.fetch_add(1, Ordering::Relaxed)
                },
                passthrough: Mutex::new(None),
                last_model: Mutex::new(Weak::new()),
                last_model_ptr: AtomicUsize::new(0),
                connector: self.connector,
                locality: self.locality,
                resolver: self.resolver,
                model: self.model,
                seed: AtomicU64::new(seed),
            }),
        }
    }
}

// Aligned to a cache line: the clones and drops of `Endpoints` write the
// reference count, which then shares no line with the fields every
// request reads.
#[repr(align(64))]
struct Inner {
    // Looked up per request by cluster name: a fast hash, not SipHash
    // (names come from config, not from requests).
    clusters: Mutex<HashMap<String, Arc<ClusterState>, foldhash::fast::RandomState>>,
    /// Changes whenever `clusters` gains or loses a state: per-thread
    /// lookups made before are stale.
    generation: AtomicU64,
    /// Tells stages apart in the per-thread lookups.
    id: u64,
    passthrough: Mutex<Option<Arc<ClusterState>>>,
    last_model: Mutex<Weak<Model>>,
    last_model_ptr: AtomicUsize,
    connector: Arc<dyn Connector>,
    locality: Option<String>,
    resolver: Arc<dyn Resolve>,
    model: Option<ModelRx>,
    seed: AtomicU64,
}

/// The endpoint stage: a `tower::Service<Request<MeshBody>>` reading the
/// [`Upstream`] extension. Build it once and clone it.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<Inner>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Plain TCP, locality from the model's client labels.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a custom connector, locality or resolver.
    pub fn builder() -> EndpointsBuilder {
        EndpointsBuilder {
            connector: Arc::new(TcpConnector),
            locality: None,
            resolver: Arc::new(SystemResolver),
            model: None,
            seed: None,
        }
    }

    /// Counters of `cluster`, once a request has used it.
    pub fn stats(&self, cluster: &str) -> Option<StatsSnapshot> {
        let state = self.inner.clusters.locked().get(cluster).cloned()?;
        let mut snap = state.stats.snapshot();
        let core = state.core.locked();
        snap.requests += core.requests;
        snap.active_requests = core
            .targets
            .iter()
            .map(|t| u64::from(t.shared.active.load(Ordering::Relaxed)))
            .sum();
        Some(snap)
    }

    /// Endpoints of `cluster` ejected by outlier detection now.
    pub fn ejected(&self, cluster: &str) -> Vec<SocketAddr> {
        let Some(state) = self.inner.clusters.locked().get(cluster).cloned() else {
            return Vec::new();
        };
        let now = now();
        let core = state.core.locked();
        let Some(d) = core.outlier.as_ref() else {
            return Vec::new();
        };
        core.lb
            .endpoints()
            .iter()
            .map(|e| e.key)
            .filter(|a| d.is_ejected(a, now))
            .collect()
    }

    fn next_seed(&self) -> u64 {
        self.inner
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
    }

    /// The state of `cluster` when it can be had without waiting: already
    /// there (brought up to date under the pick's lock), or new with only
    /// IP endpoints. `None` when host names must be looked up first.
    fn state_now(&self, model: &Arc<Model>, cluster: &Cluster) -> Option<Arc<ClusterState>> {
        let existing = self.existing(model, cluster);
        match existing {
            Some(st) => Some(st),
            None if dns::has_names(cluster) => None,
            None => Some(self.insert_state(model, cluster, None).0),
        }
    }

    /// The state of `cluster`, created or brought up to date with `model`,
    /// looking up the host names that have no answer yet (and starting
    /// their refresh).
    async fn state_for(&self, model: &Arc<Model>, cluster: &Cluster) -> Arc<ClusterState> {
        let existing = self.existing(model, cluster);
        let missing = match &existing {
            Some(st) => {
                let core = &mut *st.core.locked();
                let answered = dns::answered(core.dns.as_ref(), cluster);
                if answered && !ClusterState::needs_update(core, model, cluster) {
                    return st.clone();
                }
                dns::missing(core.dns.as_ref(), cluster)
            }
            None => dns::missing(None, cluster),
        };
        let answers = dns::lookup_all(&*self.inner.resolver, &missing).await;
        let now = now();
        match existing {
            Some(st) => {
                let mut core = st.core.locked();
                let started = dns::record_all(&mut core.dns, cluster, &missing, &answers, now);
                if ClusterState::needs_update(&mut core, model, cluster) {
                    self.update_state(&st, &mut core, model, cluster);
                } else {
                    st.sync_endpoints(&mut core, now);
                }
                drop(core);
                if let Some(task) = started {
                    self.refresh(&st, task);
                }
                st
            }
            None => {
                let mut names = None;
                let started = dns::record_all(&mut names, cluster, &missing, &answers, now);
                let (st, inserted) = self.insert_state(model, cluster, names);
                if let (Some(task), true) = (started, inserted) {
                    self.refresh(&st, task);
                }
                st
            }
        }
    }

    /// Starts refresh task `task` of `st`'s host names.
    fn refresh(&self, st: &Arc<ClusterState>, task: u64) {
        dns::spawn(
            st,
            task,
            self.inner.resolver.clone(),
            self.inner.model.clone(),
        );
    }

    /// The state kept for `cluster`, if any, after forgetting clusters
    /// `model` no longer has.
    fn existing(&self, model: &Arc<Model>, cluster: &Cluster) -> Option<Arc<ClusterState>> {
        self.gc(model);
        let generation = self.inner.generation.load(Ordering::Acquire);
        let key = (self.inner.id, generation);
        if let Some(st) = seen_state(key, &cluster.name) {
            return Some(st);
        }
        let st = self.inner.clusters.locked().get(&cluster.name).cloned()?;
        remember_state(key, &cluster.name, &st);
        Some(st)
    }

    /// Keeps a new state of `cluster` (its host names answered by `dns`),
    /// unless another request kept one first: that one comes back, with
    /// false.
    fn insert_state(
        &self,
        model: &Arc<Model>,
        cluster: &Cluster,
        dns: Option<Names>,
    ) -> (Arc<ClusterState>, bool) {
        let new = Arc::new(ClusterState::new(
            cluster,
            Arc::downgrade(model),
            client_info(model, self.inner.locality.as_deref()),
            dns,
            self.inner.connector.clone(),
            self.next_seed(),
        ));
        let st = self
            .inner
            .clusters
            .locked()
            .entry(cluster.name.clone())
            .or_insert_with(|| new.clone())
            .clone();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let inserted = Arc::ptr_eq(&st, &new);
        (st, inserted)
    }

    fn update_state(
        &self,
        st: &ClusterState,
        core: &mut Core,
        model: &Arc<Model>,
        cluster: &Cluster,
    ) {
        if ClusterState::needs_update(core, model, cluster) {
            let client = client_info(model, self.inner.locality.as_deref());
            st.update(core, model, cluster, client, now());
        }
    }

    /// Forgets clusters a newly seen model no longer has.
    fn gc(&self, model: &Arc<Model>) {
        // The common case, the same model as last time, takes no lock. The
        // address compare is exact: `last_model` holds a `Weak`, which
        // keeps the address from being reused by another model.
        let ptr = Arc::as_ptr(model) as usize;
        if self.inner.last_model_ptr.load(Ordering::Acquire) == ptr {
            return;
        }
        let mut last = self.inner.last_model.locked();
        if Weak::ptr_eq(&last, &Arc::downgrade(model)) {
            return;
        }
        *last = Arc::downgrade(model);
        self.inner.last_model_ptr.store(ptr, Ordering::Release);
        drop(last);
        let mut m = self.inner.clusters.locked();
        let before = m.len();
        m.retain(|name, st| {
            let keep = model.clusters.contains_key(name);
            if !keep {
                st.retire();
            }
            keep
        });
        if m.len() != before {
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn passthrough_state(&self) -> Arc<ClusterState> {
        let mut slot = self.inner.passthrough.locked();
        slot.get_or_insert_with(|| {
            let cluster = Cluster {
                name: Upstream::PASSTHROUGH.to_string(),
                host: String::new(),
                port: 0,
                subset: None,
                protocol: mesh_core::config::kube::Protocol::Http,
                resolution: Resolution::Passthrough,
                policy: ClusterPolicy::default(),
                endpoints: Vec::new(),
                dns: None,
            };
            Arc::new(ClusterState::new(
                &cluster,
                Weak::new(),
                Default::default(),
                None,
                self.inner.connector.clone(),
                1,
            ))
        })
        .clone()
    }

    /// Starts a request without waiting when it can: the cluster state is
    /// at hand, an endpoint is picked, the limits admit it at once, and the
    /// request is handed to the pool. What needs to wait (host-name
    /// lookups, passthrough, a connection slot) goes the async way.
    fn start(&self, mut req: Request<MeshBody>) -> EndpointsFuture {
        // Before anything borrows the request: the pick below only reads
        // it, so the model it carries needs no clone of its own.
        set_host(&mut req);
        let Some(up) = req.extensions().get::<Upstream>() else {
            return EndpointsFuture::failed(uh(
                "the request carries no Upstream: the routing stage must choose a cluster first",
            ));
        };
        if up.is_passthrough() {
            return EndpointsFuture::slow(self.clone().serve(req));
        }
        let Some(cluster) = up.model.clusters.get(&*up.cluster) else {
            return EndpointsFuture::failed(not_in_model(up));
        };
        if cluster.endpoints.is_empty() {
            return EndpointsFuture::slow(self.clone().serve(req));
        }
        let Some(state) = self.state_now(&up.model, cluster) else {
            return EndpointsFuture::slow(self.clone().serve(req));
        };
        let picked = match self.pick(&req, up, cluster, &state, true) {
            Ok(Some(p)) => p,
            Ok(None) => return EndpointsFuture::slow(self.clone().serve(req)),
            Err(e) => return EndpointsFuture::failed(e),
        };
        match picked.into_pick(req, state) {
            (pick, Admit::Now(admission)) => match pick.send(admission) {
                Ok(f) => EndpointsFuture(Flight::Sent(f)),
                Err(e) => EndpointsFuture::failed(e),
            },
            (pick, Admit::Wait(wait)) => {
                EndpointsFuture::slow(
                    async move { Waiting { picked: pick, wait }.send().await?.await },
                )
            }
        }
    }

    /// The async way of [`Endpoints::start`].
    async fn serve(self, mut req: Request<MeshBody>) -> Result<Response<MeshBody>, BoxError> {
        let Some(up) = req.extensions().get::<Upstream>().cloned() else {
            return Err(uh(
                "the request carries no Upstream: the routing stage must choose a cluster first",
            )
            .into());
        };
        let model = up.model.clone();
        let cluster = if up.is_passthrough() {
            None
        } else {
            let Some(c) = model.clusters.get(&*up.cluster) else {
                return Err(not_in_model(&up).into());
            };
            Some(c)
        };
        let cluster = match cluster {
            Some(c) if !c.endpoints.is_empty() => c,
            Some(c) if c.resolution == Resolution::Static => {
                return Err(uh(format!(
                    "cluster {} has no endpoints; check the service's selector or WorkloadEntries",
                    c.name
                ))
                .into());
            }
            // Passthrough, or a DNS/NONE cluster without endpoints: the
            // requested host itself.
            other => {
                let (host, port) = match other {
                    Some(c) => (c.host.clone(), c.port),
                    None => (up.host.to_string(), up.port),
                };
                set_host(&mut req);
                return self.passthrough(req, &up, &host, port).await;
            }
        };
        let state = self.state_for(&model, cluster).await;
        set_host(&mut req);
        let Some(picked) = self.pick(&req, &up, cluster, &state, false)? else {
            return Err(uh("cluster state went stale").into());
        };
        let sent = match picked.into_pick(req, state) {
            (pick, Admit::Now(admission)) => pick.send(admission)?,
            (pick, Admit::Wait(wait)) => Waiting { picked: pick, wait }.send().await?,
        };
        sent.await
    }

    /// Picks the endpoint of `req` (whose [`Upstream`] is `up`) in `state`,
    /// counts it active and asks the limits to admit it. With `current`, a
    /// state behind the request's model is first brought up to date (or,
    /// when that needs a host-name lookup, `None` comes back).
    fn pick(
        &self,
        req: &Request<MeshBody>,
        up: &Upstream,
        cluster: &Cluster,
        state: &Arc<ClusterState>,
        current: bool,
    ) -> Result<Option<Picked>, BoxError> {
        let now = now();
        // Pick, count the request as active on its endpoint and admit it,
        // under one short hold of the cluster lock.
        let mut core = state.core.locked();
        let core = &mut *core;
        if current {
            if ClusterState::needs_update(core, &up.model, cluster) {
                if !dns::answered(core.dns.as_ref(), cluster) {
                    return Ok(None);
                }
                self.update_state(state, core, &up.model, cluster);
            } else if core.names && core.dns.is_none() {
                // Host names whose refresh stopped: look them up again.
                return Ok(None);
            }
        }
        let (hash, set_cookie) = match &core.hash {
            Some(src) => request_hash(src, req, self.next_seed()),
            None => (None, None),
        };
        if let Some(d) = core.outlier.as_mut() {
            d.maybe_tick(now);
        }
        let tried = up.tried.locked();
        let hosts = HostsNow {
            targets: &core.targets,
            outlier: core.outlier.as_ref(),
            tried: Some(&*tried),
            now,
        };
        let picked = core.lb.pick_hosts(now, &mut core.rng, hash, &hosts);
        drop(tried);
        let Some(target) = picked.and_then(|p| core.targets.get(p.index)) else {
            return Err(no_healthy(core, cluster, state, now));
        };
        target.shared.active.fetch_add(1, Ordering::Relaxed);
        // From here on the active count is released when the guard drops.
        let active = ActiveCount(target.shared.clone());
        let proto = choose_proto(cluster, req);
        let admit = core.limits.admit_now(proto == Proto::Http1, &state.stats)?;
        if matches!(admit, Admit::Now(_)) {
            core.requests += 1;
        }
        up.record_tried(target.addr);
        Ok(Some(Picked {
            addr: target.addr,
            pool: target.pool.clone(),
            active,
            proto,
            set_cookie,
            admit,
        }))
    }

    async fn passthrough(
        &self,
        mut req: Request<MeshBody>,
        up: &Upstream,
        host: &str,
        port: u16,
    ) -> Result<Response<MeshBody>, BoxError> {
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => {
                let name = [(host.to_string(), port)];
                let answer = dns::lookup_all(&*self.inner.resolver, &name).await;
                match answer.into_iter().next() {
                    Some(Ok(a)) if !a.addrs.is_empty() => a.addrs[0],
                    Some(Err(e)) => {
                        return Err(MeshError::new(
                            ResponseFlag::UpstreamConnectionFailure,
                            format!("cannot resolve {host}:{port}: {e}"),
                        )
                        .into())
                    }
                    _ => {
                        return Err(MeshError::new(
                            ResponseFlag::UpstreamConnectionFailure,
                            format!("cannot resolve {host}:{port}: no addresses"),
                        )
                        .into())
                    }
                }
            }
        };
        up.record_tried(addr);
        let proto = if req.version() == Version::HTTP_2 || crate::error::is_grpc(&req) {
            Proto::Http2
        } else {
            Proto::Http1
        };
        let state = self.passthrough_state();
        prepare(&mut req, addr, None, proto)?;
        match state.pool_for(addr).send(proto, req).await {
            Ok((resp, lease)) => {
                let (mut parts, body) = resp.into_parts();
                parts.extensions.insert(ServedBy(addr));
                let body = GuardedBody::new(body, lease);
                Ok(Response::from_parts(parts, mesh_body::boxed(body)))
            }
            Err(e) => {
                let flag = if e.is_connect() {
                    ResponseFlag::UpstreamConnectionFailure
                } else {
                    ResponseFlag::UpstreamRemoteReset
                };
                Err(
                    MeshError::new(flag, format!("passthrough to {addr}: {}", error_chain(&e)))
                        .into(),
                )
            }
        }
    }
}

impl tower::Service<Request<MeshBody>> for Endpoints {
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = EndpointsFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        self.start(req)
    }
}

impl crate::client::call::CallRef for Endpoints {
    fn call_ref(&self, req: Request<MeshBody>) -> Self::Future {
        self.start(req)
    }
}

/// A cached cluster state's key: (stage id, generation), cluster name.
type StateKey = ((u64, u64), Box<str>);

thread_local! {
    /// Cluster states looked up per thread: the shared map's lock is a
    /// cache line every thread would write on every request. Entries are
    /// weak (a dropped stage closes its connections) and keyed by the stage
    /// and the map's generation, so a state the stage forgot is never found.
    static STATES: ThreadCache<StateKey, Weak<ClusterState>> =
        const { ThreadCache::new() };
}

fn seen_state(key: (u64, u64), cluster: &str) -> Option<Arc<ClusterState>> {
    STATES
        .with(|c| c.find(|(k, name), st| (*k == key && &**name == cluster).then(|| st.upgrade())))?
}

fn remember_state(key: (u64, u64), cluster: &str, st: &Arc<ClusterState>) {
    STATES.with(|c| {
        // Entries of an older generation of this stage are dead.
        c.insert((key, cluster.into()), Arc::downgrade(st), |((k, _), _)| {
            k.0 != key.0 || k.1 == key.1
        })
    })
}

/// Gives the request a `Host` header naming the authority it asked for,
/// since its URI is about to name the endpoint instead.
fn set_host(req: &mut Request<MeshBody>) {
    if req.headers().contains_key(http::header::HOST) {
        return;
    }
    let value = match (req.uri().authority(), req.extensions().get::<Upstream>()) {
        (Some(a), _) => host_value(a.as_str()),
        (None, Some(up)) => upstream_host(up),
        (None, None) => return,
    };
    if let Ok(v) = value {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

/// The `Host` value naming `up`, for a request whose URI has no
/// authority (rare: the route stage passes the authority it routed on).
#[cold]
#[inline(never)]
fn upstream_host(up: &Upstream) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    if up.port == 80 || up.port == 0 {
        HeaderValue::from_str(&up.host)
    } else {
        HeaderValue::from_str(&format!("{}:{}", up.host, up.port))
    }
}

thread_local! {
    /// Host values built per thread: a client talks to few authorities,
    /// and a clone of a built value copies and checks nothing (and touches
    /// no count another thread shares).
    static HOST_VALUES: ThreadCache<Box<str>, HeaderValue> = const { ThreadCache::new() };
}

/// The `Host` value for `authority`.
fn host_value(authority: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    if let Some(v) = HOST_VALUES.with(|c| c.find(|a, v| (&**a == authority).then(|| v.clone()))) {
        return Ok(v);
    }
    let v = HeaderValue::from_str(authority)?;
    HOST_VALUES.with(|c| c.insert(authority.into(), v.clone(), |_| true));
    Ok(v)
}

// Pre-parsed: a `&str` key is parsed again on every lookup.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The failure of a request for a cluster its model does not have.
#[cold]
#[inline(never)]
fn not_in_model(up: &Upstream) -> MeshError {
    uh(format!("cluster {} is not in the model", up.cluster))
}

/// The failure of a pick that found no endpoint to use.
#[cold]
#[inline(never)]
fn no_healthy(
    core: &Core,
    cluster: &Cluster,
    state: &ClusterState,
    now: std::time::Instant,
) -> BoxError {
    let ejected = core.outlier.as_ref().map_or(0, |d| d.ejected_count(now));
    state.stats.inc_no_healthy();
    uh(format!(
        "no healthy endpoint in cluster {} ({} endpoints, {ejected} ejected by outlier detection)",
        cluster.name,
        cluster.endpoints.len()
    ))
    .into()
}

/// What [`Endpoints::pick`] chose, before the request joins it.
struct Picked {
    addr: SocketAddr,
    pool: Arc<pool::EndpointPool>,
    active: ActiveCount,
    proto: Proto,
    set_cookie: Option<String>,
    admit: Admit,
}

impl Picked {
    fn into_pick(self, req: Request<MeshBody>, state: Arc<ClusterState>) -> (Pick, Admit) {
        let pick = Pick {
            req,
            state,
            addr: self.addr,
            proto: self.proto,
            set_cookie: self.set_cookie,
            active: self.active,
            pool: self.pool,
        };
        (pick, self.admit)
    }
}

#[cold]
fn uh(reason: impl Into<String>) -> MeshError {
    MeshError::new(ResponseFlag::NoHealthyUpstream, reason)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_built_once_per_authority() {
        let a = host_value("reviews:9080").unwrap();
        let b = host_value("reviews:9080").unwrap();
        assert_eq!(a, "reviews:9080");
        // Same bytes, not a copy: the second came from the cache.
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(host_value("ratings").unwrap(), "ratings");
        assert!(host_value("bad\nhost").is_err());
        for i in 0..2 * crate::thread_cache::CAPACITY {
            assert_eq!(
                host_value(&format!("h{i}")).unwrap(),
                format!("h{i}").as_str()
            );
        }
        assert_eq!(host_value("reviews:9080").unwrap(), "reviews:9080");
    }
}
