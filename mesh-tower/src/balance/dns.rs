//! Host-named endpoints the way Envoy's DNS clusters treat them: each
//! distinct (host, port) of a cluster is looked up again and again by one
//! background task per cluster state, and the answers become the
//! cluster's endpoints.
//!
//! - `DNS` (Envoy `STRICT_DNS`) uses every address every name answers;
//!   `DNS_ROUND_ROBIN` (`LOGICAL_DNS`) only the first, so new connections
//!   go to it (requests already sent finish on their connection).
//! - A name is looked up again after the cluster's refresh rate (Envoy's
//!   default 5 s), or after the answer's TTL when the cluster respects
//!   TTLs and the resolver reports one (never sooner than [`MIN_TTL`]).
//! - A failed lookup keeps the name's last good addresses and is retried
//!   after the refresh rate.
//! - A changed answer updates the endpoint set in place: endpoints that
//!   stay keep their balancer and outlier state and their connections;
//!   removed ones leave the balancer, and their pools close once the
//!   requests they carry end.
//! - The task holds the cluster state weakly and stops when the state is
//!   dropped (balancer dropped, or the cluster left the model), when the
//!   live model (given with `EndpointsBuilder::model`) no longer has the
//!   cluster, or when the cluster has no host names left.
//!
//! The first request of a cluster still waits for the first answers (the
//! endpoint stage's slow path looks them up); after that no request waits
//! for DNS, and nothing is spawned per request. Not here: the lookup itself
//! ([`Resolve`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mesh_core::model::{Cluster, DnsRefresh};
use mesh_core::registry::Resolution;
use mesh_core::sync::LockExt;

use super::cluster::ClusterState;
use super::now;
use super::resolve::{Answer, Resolve};
use crate::ModelRx;

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// The shortest TTL honoured: a shorter (non-zero) one counts as this.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The shortest refresh rate (Envoy rejects rates under 1 ms).
const MIN_RATE: Duration = Duration::from_millis(1);
/// How long one lookup may take before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One host name of a cluster, with the port its endpoints use.
pub(crate) type Name = (String, u16);

/// The last good answer of one name and when to ask again.
#[derive(Debug)]
struct Entry {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    due: Instant,
}

/// The host names of one cluster state with their answers, owned by the
/// refresh task `task`. A cluster state without one has no task running.
#[derive(Debug)]
pub(crate) struct Names {
    task: u64,
    entries: Vec<Entry>,
}

/// What the refresh task does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing to refresh: the task ends.
    Stop,
    /// Wait until the earliest name is due.
    Sleep(Instant),
    /// Look these names up now.
    Lookup(Vec<Name>),
}

impl Names {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            task: NEXT.fetch_add(1, Ordering::Relaxed),
            entries: Vec::new(),
        }
    }

    fn entry(&self, host: &str, port: u16) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.port == port && e.host == host)
    }

    /// The addresses endpoint `host:port` stands for: all of the last good
    /// answer, or its first for `DNS_ROUND_ROBIN`.
    pub fn addrs(&self, resolution: Resolution, host: &str, port: u16) -> &[SocketAddr] {
        let all = self.entry(host, port).map_or(&[][..], |e| &e.addrs[..]);
        match resolution {
            Resolution::DnsRoundRobin => &all[..all.len().min(1)],
            _ => all,
        }
    }

    /// Takes the outcome of a lookup of `name` at `now`: an answer replaces
    /// the addresses, a failure keeps them; either way the next lookup is
    /// scheduled.
    fn record(
        &mut self,
        cluster: &str,
        (host, port): &Name,
        result: &io::Result<Answer>,
        refresh: Option<DnsRefresh>,
        now: Instant,
    ) {
        let i = match self
            .entries
            .iter()
            .position(|e| e.port == *port && e.host == *host)
        {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    host: host.clone(),
                    port: *port,
                    addrs: Vec::new(),
                    due: now,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[i];
        match result {
            Ok(answer) => {
                if entry.addrs != answer.addrs {
                    tracing::debug!(%cluster, %host, port, addrs = ?answer.addrs, "DNS answer changed");
                }
                entry.addrs.clone_from(&answer.addrs);
                entry.due = now + refresh_after(refresh, answer.ttl);
            }
            Err(error) => {
                tracing::warn!(
                    %cluster, %host, port, %error, kept = entry.addrs.len(),
                    "DNS lookup failed; keeping the last good addresses until a retry succeeds"
                );
                entry.due = now + refresh_after(refresh, None);
            }
        }
    }

    /// The next step for `cluster` at `now`; forgets the names it no
    /// longer has.
    pub fn plan(&mut self, cluster: &Cluster, now: Instant) -> Plan {
        let names = host_names(cluster);
        if names.is_empty() {
            return Plan::Stop;
        }
        self.entries
            .retain(|e| names.iter().any(|(h, p)| *p == e.port && h == &e.host));
        let due: Vec<Name> = names
            .iter()
            .filter(|(h, p)| self.entry(h, *p).is_none_or(|e| e.due <= now))
            .map(|(h, p)| (h.to_string(), *p))
            .collect();
        if !due.is_empty() {
            return Plan::Lookup(due);
        }
        match self.entries.iter().map(|e| e.due).min() {
            Some(at) => Plan::Sleep(at),
            None => Plan::Stop,
        }
    }
}

/// How long after an answer (with `ttl`, if known) a name is looked up
/// again: the TTL when the cluster respects it (Envoy's
/// `respect_dns_ttl`) and it is not zero, at least [`MIN_TTL`]; else the
/// refresh rate, [`DEFAULT_REFRESH`] unless set. Failures pass no TTL.
pub(crate) fn refresh_after(refresh: Option<DnsRefresh>, ttl: Option<Duration>) -> Duration {
    let rate = refresh
        .and_then(|r| r.rate)
        .map_or(DEFAULT_REFRESH, |d| d.get())
        .max(MIN_RATE);
    match ttl {
        Some(ttl) if !ttl.is_zero() && refresh.is_some_and(|r| r.respect_ttl) => ttl.max(MIN_TTL),
        _ => rate,
    }
}

/// The distinct host names of `cluster`'s endpoints (IP endpoints need no
/// lookup), in endpoint order.
pub(crate) fn host_names(cluster: &Cluster) -> Vec<(&str, u16)> {
    let mut out: Vec<(&str, u16)> = Vec::new();
    for e in &cluster.endpoints {
        let name = (e.address.as_str(), e.port);
        if e.address.parse::<IpAddr>().is_err() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// True when some endpoint of `cluster` is named by host name.
pub(crate) fn has_names(cluster: &Cluster) -> bool {
    cluster
        .endpoints
        .iter()
        .any(|e| e.address.parse::<IpAddr>().is_err())
}

/// The names of `cluster` without an answer in `names` (all of them
/// without a refresh task).
pub(crate) fn missing(names: Option<&Names>, cluster: &Cluster) -> Vec<Name> {
    host_names(cluster)
        .into_iter()
        .filter(|(h, p)| names.is_none_or(|n| n.entry(h, *p).is_none()))
        .map(|(h, p)| (h.to_string(), p))
        .collect()
}

/// True when every name of `cluster` has an answer in `names` (so its
/// endpoints can be built without waiting).
pub(crate) fn answered(names: Option<&Names>, cluster: &Cluster) -> bool {
    host_names(cluster)
        .iter()
        .all(|(h, p)| names.is_some_and(|n| n.entry(h, *p).is_some()))
}

/// Looks `names` up, all at once, each bounded by [`LOOKUP_TIMEOUT`].
pub(crate) async fn lookup_all(resolver: &dyn Resolve, names: &[Name]) -> Vec<io::Result<Answer>> {
    futures_util::future::join_all(names.iter().map(|(host, port)| async move {
        match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(host, *port)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer for {host} within {LOOKUP_TIMEOUT:?}"),
            )),
        }
    }))
    .await
}

/// Records the answers of a lookup of `looked_up` for `cluster` in `slot`,
/// starting a [`Names`] there when there is none. Returns the id of the
/// refresh task to spawn when a new one was started.
pub(crate) fn record_all(
    slot: &mut Option<Names>,
    cluster: &Cluster,
    looked_up: &[Name],
    answers: &[io::Result<Answer>],
    now: Instant,
) -> Option<u64> {
    if looked_up.is_empty() {
        return None;
    }
    let started = slot.is_none();
    let names = slot.get_or_insert_with(Names::new);
    for (name, answer) in looked_up.iter().zip(answers) {
        names.record(&cluster.name, name, answer, cluster.dns, now);
    }
    started.then_some(names.task)
}

/// Starts the refresh task `task` of `state` on the current runtime (none:
/// no refresh, with a warning).
pub(crate) fn spawn(
    state: &Arc<ClusterState>,
    task: u64,
    resolver: Arc<dyn Resolve>,
    model: Option<ModelRx>,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(refresh(Arc::downgrade(state), task, resolver, model));
        }
        Err(_) => tracing::warn!(
            cluster = %state.name,
            "no tokio runtime: host names of the cluster are not refreshed"
        ),
    }
}

/// The refresh task of one cluster state (see the module docs).
async fn refresh(
    state: Weak<ClusterState>,
    task: u64,
    resolver: Arc<dyn Resolve>,
    mut model: Option<ModelRx>,
) {
    loop {
        let plan = {
            let Some(st) = state.upgrade() else { return };
            let gone = st.retired.load(Ordering::Acquire)
                || model
                    .as_ref()
                    .is_some_and(|m| !m.borrow().clusters.contains_key(&st.name));
            let mut guard = st.core.locked();
            let core = &mut *guard;
            let Some(names) = core.dns.as_mut().filter(|n| n.task == task) else {
                // Another task took over.
                return;
            };
            let plan = match &core.cluster {
                Some(cluster) if !gone => names.plan(cluster, now()),
                _ => Plan::Stop,
            };
            if plan == Plan::Stop {
                tracing::debug!(cluster = %st.name, "DNS refresh stops");
                core.dns = None;
                return;
            }
            plan
        };
        match plan {
            Plan::Stop => return,
            Plan::Sleep(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    live = changed(&mut model) => {
                        if !live {
                            // The model's source ended: follow requests only.
                            model = None;
                        }
                    }
                }
            }
            Plan::Lookup(due) => {
                let answers = lookup_all(&*resolver, &due).await;
                let Some(st) = state.upgrade() else { return };
                let mut guard = st.core.locked();
                let core = &mut *guard;
                let (Some(names), Some(cluster)) = (core.dns.as_mut(), core.cluster.as_ref())
                else {
                    return;
                };
                if names.task != task {
                    return;
                }
                let now = now();
                for (name, answer) in due.iter().zip(&answers) {
                    names.record(&st.name, name, answer, cluster.dns, now);
                }
                st.sync_endpoints(core, now);
            }
        }
    }
}

/// Waits for the next model; false when its sender is gone. Never ends
/// without a model to follow.
async fn changed(model: &mut Option<ModelRx>) -> bool {
    match model {
        Some(m) => m.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
