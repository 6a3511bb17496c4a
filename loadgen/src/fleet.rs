//! N simulated clients over C HTTP/2 connections (one tonic `Channel` per
//! connection, the clients' ADS streams multiplexed on it), and the
//! bookkeeping of when each client was configured and when each took the
//! edit (a changed route configuration) or an endpoint change (a changed
//! endpoint set).
//!
//! Not here: the server process, timing of CPU or memory.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::client::{self, Event};
use crate::config;
use crate::kube::Layout;
use crate::LoadError;

/// What the services are and what the clients call them.
#[derive(Debug, Clone, Default)]
pub enum Naming {
    /// The generated ServiceEntries of [`config`]: hosts
    /// `svc-N.load.svc.cluster.local`, every client in namespace `load`.
    #[default]
    Load,
    /// The Kubernetes Services of a [`Layout`]: hosts
    /// `svc-N.ns-M.svc.cluster.local`, client `c` in the `c`-th
    /// application namespace (round robin).
    Kube(Layout),
}

impl Naming {
    /// The listener a client asks for to reach service `i`.
    pub fn listener(&self, i: usize) -> String {
        match self {
            Naming::Load => config::listener(i),
            Naming::Kube(l) => l.listener(i),
        }
    }

    /// Client `c`'s namespace.
    pub fn client_namespace(&self, c: usize) -> String {
        match self {
            Naming::Load => config::NAMESPACE.to_string(),
            Naming::Kube(l) => l.namespace(c),
        }
    }
}

/// Which kind of change a client reports after being configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A route configuration (RDS) changed: a VirtualService edit.
    Route,
    /// An endpoint set (EDS) changed: an EndpointSlice edit.
    Endpoints,
}

/// The fleet's shape.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Clients.
    pub clients: usize,
    /// Services in the config.
    pub services: usize,
    /// Services each client targets.
    pub targets: usize,
    /// HTTP/2 connections the clients share.
    pub connections: usize,
    /// Delta ADS instead of SotW.
    pub delta: bool,
    /// Distinct client identities (apps).
    pub apps: usize,
    /// Every app also serves the gRPC port (see [`config::apps_yaml`]):
    /// each client asks for its server listener too.
    pub serving: bool,
    /// What the services are called.
    pub naming: Naming,
}

/// A running fleet; dropping it ends every stream.
pub struct Fleet {
    spec: FleetSpec,
    tasks: JoinSet<()>,
    events: mpsc::UnboundedReceiver<Event>,
    /// When each client was configured.
    configured: Vec<Option<Instant>>,
    /// When each client first saw a changed route since the last
    /// [`Fleet::mark_edit`].
    edited: Vec<Option<Instant>>,
    /// When each client first saw a changed endpoint set since the last
    /// [`Fleet::mark_edit`].
    endpoints_changed: Vec<Option<Instant>>,
    /// Streams that ended (and were reopened), and the first reason.
    ended: usize,
    first_end: Option<String>,
    /// Resources of each type (LDS, RDS, CDS, EDS) the configured clients
    /// held when they got configured, summed.
    resources: [usize; 4],
    /// When the first stream was opened.
    pub started: Instant,
}

/// How far the fleet got by a deadline.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Clients done.
    pub done: usize,
    /// Clients expected.
    pub of: usize,
    /// When the last one was done (all done) or the deadline (not all).
    pub at: Instant,
    /// Streams that ended so far (each reopened after gRPC's backoff).
    pub ended: usize,
    /// The first stream's end reason.
    pub first_end: Option<String>,
}

impl Progress {
    /// Everyone done.
    pub fn complete(&self) -> bool {
        self.done == self.of
    }
}

impl Fleet {
    /// Connects `spec.connections` channels to `addr` and starts every
    /// client's stream at once.
    pub async fn start(addr: SocketAddr, spec: FleetSpec) -> Result<Self, LoadError> {
        let mut channels: Vec<Channel> = Vec::new();
        for _ in 0..spec.connections.max(1) {
            let ch = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| LoadError::Connect {
                    addr: addr.to_string(),
                    source: e,
                })?
                .initial_connection_window_size(Some(16 << 20))
                .initial_stream_window_size(Some(4 << 20))
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| LoadError::Connect {
                    addr: addr.to_string(),
                    source: e,
                })?;
            channels.push(ch);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        for c in 0..spec.clients {
            let mut listeners: Vec<String> = config::targets(c, spec.targets, spec.services)
                .into_iter()
                .map(|i| spec.naming.listener(i))
                .collect();
            if spec.serving {
                listeners.push(client::inbound_listener(c));
            }
            let channel = channels[c % channels.len()].clone();
            tasks.spawn(client::run(
                c,
                client::node(c, spec.apps, &spec.naming.client_namespace(c)),
                listeners,
                channel,
                spec.delta,
                tx.clone(),
            ));
        }
        Ok(Self {
            configured: vec![None; spec.clients],
            edited: vec![None; spec.clients],
            endpoints_changed: vec![None; spec.clients],
            ended: 0,
            first_end: None,
            resources: [0; 4],
            spec,
            tasks,
            events: rx,
            started,
        })
    }

    fn absorb(&mut self, e: Event) {
        match e {
            Event::Configured {
                client,
                at,
                resources,
            } => {
                self.configured[client].get_or_insert(at);
                for (sum, n) in self.resources.iter_mut().zip(resources) {
                    *sum += n;
                }
            }
            Event::RouteChanged { client, at } => {
                self.edited[client].get_or_insert(at);
            }
            Event::EndpointsChanged { client, at } => {
                self.endpoints_changed[client].get_or_insert(at);
            }
            Event::Ended { why, .. } => {
                self.ended += 1;
                self.first_end.get_or_insert(why);
            }
        }
    }

    fn progress(&self, times: &[Option<Instant>], deadline: Instant) -> Progress {
        let finished: Vec<Instant> = times.iter().flatten().copied().collect();
        let all = finished.len() == times.len();
        Progress {
            done: finished.len(),
            of: times.len(),
            at: if all {
                finished.iter().copied().max().unwrap_or(self.started)
            } else {
                deadline.min(Instant::now())
            },
            ended: self.ended,
            first_end: self.first_end.clone(),
        }
    }

    /// Waits until every selected client has a time (`which` gives the
    /// selection and the times), or `deadline`.
    async fn wait_for(
        &mut self,
        which: impl Fn(&Self) -> (Vec<bool>, Vec<Option<Instant>>),
        deadline: Instant,
    ) -> Progress {
        loop {
            let (want, times) = which(self);
            let sel: Vec<Option<Instant>> = want
                .iter()
                .zip(times)
                .filter(|(w, _)| **w)
                .map(|(_, t)| t)
                .collect();
            if sel.iter().all(Option::is_some) || Instant::now() >= deadline {
                return self.progress(&sel, deadline);
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => self.absorb(e),
                // Every stream is gone: nothing more will come.
                Ok(None) => tokio::time::sleep_until(deadline).await,
                Err(_) => {}
            }
            // Take everything already queued before checking again.
            while let Ok(e) = self.events.try_recv() {
                self.absorb(e);
            }
        }
    }

    /// Waits until every client is configured, or `deadline`.
    pub async fn wait_configured(&mut self, deadline: Instant) -> Progress {
        let n = self.spec.clients;
        self.wait_for(move |f| (vec![true; n], f.configured.clone()), deadline)
            .await
    }

    /// Forgets earlier route and endpoint changes: the edit starts now.
    pub fn mark_edit(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.absorb(e);
        }
        self.edited = vec![None; self.spec.clients];
        self.endpoints_changed = vec![None; self.spec.clients];
    }

    /// The clients that target service `i`.
    pub fn affected_by(&self, i: usize) -> Vec<bool> {
        (0..self.spec.clients)
            .map(|c| config::targets(c, self.spec.targets, self.spec.services).contains(&i))
            .collect()
    }

    /// Waits until every client in `affected` saw a changed route since
    /// [`Fleet::mark_edit`], or `deadline`.
    pub async fn wait_edited(&mut self, affected: Vec<bool>, deadline: Instant) -> Progress {
        self.wait_changed(Change::Route, affected, deadline).await
    }

    /// Waits until every client in `affected` saw a `change` since
    /// [`Fleet::mark_edit`], or `deadline`.
    pub async fn wait_changed(
        &mut self,
        change: Change,
        affected: Vec<bool>,
        deadline: Instant,
    ) -> Progress {
        self.wait_for(
            move |f| (affected.clone(), f.changed_times(change).to_vec()),
            deadline,
        )
        .await
    }

    fn changed_times(&self, change: Change) -> &[Option<Instant>] {
        match change {
            Change::Route => &self.edited,
            Change::Endpoints => &self.endpoints_changed,
        }
    }

    /// Clients that saw a changed route since the mark (affected or not).
    pub fn edited_count(&self) -> usize {
        self.changed_count(Change::Route)
    }

    /// Clients that saw a `change` since the mark (affected or not).
    pub fn changed_count(&self, change: Change) -> usize {
        self.changed_times(change).iter().flatten().count()
    }

    /// Drains events for `d` (keeps the bookkeeping current while idle).
    pub async fn idle(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(until, self.events.recv()).await {
            self.absorb(e);
        }
    }

    /// Resources of each type (LDS, RDS, CDS, EDS) the configured clients
    /// held when they got configured, summed over clients.
    pub fn resources(&self) -> [usize; 4] {
        self.resources
    }

    /// Ends every stream.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}
