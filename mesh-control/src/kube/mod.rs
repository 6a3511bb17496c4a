//! The Kubernetes config source: Istio's resources, Services,
//! EndpointSlices, Pods, Nodes and Namespaces watched on an API server
//! (kube-rs watchers, one per kind) into a [`KubeStore`] the config loader
//! reads next to the files. One registry and one compiler serve both.
//!
//! The watchers list, then watch; a watch that expires (410 Gone) or an
//! API server that goes away and comes back is listed again, and a relist
//! that finds what was held moves nothing. While the API server is away,
//! the store keeps what it had, so nothing serving is lost.
//!
//! [`webhook`] serves the validating webhook and, from [`inject`], the
//! mutating one that joins pods to the mesh. The same client also checks
//! service account tokens for the CA and the TLS xDS port
//! ([`tokenreview`]); [`ca_secret`] keeps the root in a Secret, and the
//! elected leader ([`leader`]) writes status and root ConfigMaps
//! ([`publish`]).
//!
//! Not here: the registry and compiler the objects feed (mesh-core), and
//! xDS (mesh-xds).

pub mod ca_secret;
pub mod convert;
pub mod inject;
pub mod leader;
pub mod publish;
pub mod store;
pub mod tokenreview;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use mesh_core::config::Kind;
use tokio::task::JoinHandle;

pub use store::{Entry, KubeStore, Snapshot};

use crate::error::{MeshdError, Result};

/// Where the API server is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// A kubeconfig file; `None` infers (`KUBECONFIG`, `~/.kube/config`,
    /// then the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
}

/// A kind meshd watches, and where the API serves it.
#[derive(Debug, Clone, Copy)]
struct Watched {
    kind: Kind,
    plural: &'static str,
}

/// What meshd reads from a cluster. Deployments and the other controllers
/// are not watched: Pods and EndpointSlices already say what runs where.
const WATCHED: &[Watched] = &[
    Watched {
        kind: Kind::VirtualService,
        plural: "virtualservices",
    },
    Watched {
        kind: Kind::DestinationRule,
        plural: "destinationrules",
    },
    Watched {
        kind: Kind::Gateway,
        plural: "gateways",
    },
    Watched {
        kind: Kind::ServiceEntry,
        plural: "serviceentries",
    },
    Watched {
        kind: Kind::WorkloadEntry,
        plural: "workloadentries",
    },
    Watched {
        kind: Kind::Sidecar,
        plural: "sidecars",
    },
    Watched {
        kind: Kind::PeerAuthentication,
        plural: "peerauthentications",
    },
    Watched {
        kind: Kind::RequestAuthentication,
        plural: "requestauthentications",
    },
    Watched {
        kind: Kind::AuthorizationPolicy,
        plural: "authorizationpolicies",
    },
    Watched {
        kind: Kind::Telemetry,
        plural: "telemetries",
    },
    Watched {
        kind: Kind::Service,
        plural: "services",
    },
    Watched {
        kind: Kind::Pod,
        plural: "pods",
    },
    Watched {
        kind: Kind::EndpointSlice,
        plural: "endpointslices",
    },
    Watched {
        kind: Kind::Node,
        plural: "nodes",
    },
    Watched {
        kind: Kind::Namespace,
        plural: "namespaces",
    },
];

/// The kinds the Kubernetes source watches.
pub fn watched_kinds() -> impl Iterator<Item = Kind> {
    WATCHED.iter().map(|w| w.kind)
}

/// The plural resource name of a watched kind (`virtualservices`).
pub fn plural(kind: Kind) -> Option<&'static str> {
    WATCHED.iter().find(|w| w.kind == kind).map(|w| w.plural)
}

/// A client for the configured API server.
pub async fn client(settings: &KubeSettings) -> Result<Client> {
    let err = |detail: String| MeshdError::Kubernetes(detail);
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| err(format!("reading kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            err(format!(
                "no Kubernetes config: {e}; pass --kubeconfig FILE or run in a pod with a service account"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| err(format!("building the Kubernetes client: {e}")))
}

/// The running watchers.
pub struct KubeSource {
    store: KubeStore,
    resources: HashMap<Kind, ApiResource>,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts one watcher per kind. Kinds the cluster does not serve (an
    /// Istio CRD not installed) count as listed and empty, and are still
    /// watched, so objects appear once the CRD is applied.
    pub async fn start(client: Client) -> Self {
        let store = KubeStore::new(watched_kinds());
        let mut tasks = Vec::new();
        let mut resources = HashMap::new();
        for w in WATCHED {
            let ar = resolve(&client, w).await;
            let served = ar.is_some();
            let ar = ar.unwrap_or_else(|| fallback(w));
            if !served {
                tracing::warn!(
                    kind = %w.kind,
                    api = %ar.api_version,
                    "the API server does not serve this kind (CRD not installed?); watching for it"
                );
                store.mark_synced(w.kind);
            }
            resources.insert(w.kind, ar.clone());
            tasks.push(tokio::spawn(watch_kind(
                client.clone(),
                w.kind,
                ar,
                store.clone(),
            )));
        }
        Self {
            store,
            resources,
            client,
            tasks,
        }
    }

    /// Where the API serves each Istio kind (the kinds with a `status`
    /// meshd writes).
    pub fn istio_resources(&self) -> HashMap<Kind, ApiResource> {
        self.resources
            .iter()
            .filter(|(k, _)| !k.is_kubernetes())
            .map(|(k, ar)| (*k, ar.clone()))
            .collect()
    }

    /// The store the watchers fill.
    pub fn store(&self) -> &KubeStore {
        &self.store
    }

    /// The client the watchers use, for other calls to the same API server
    /// (TokenReviews).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("store", &self.store)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The served version of `w` we read best: the first of the kind's
/// accepted versions (newest first) that the API server serves.
async fn resolve(client: &Client, w: &Watched) -> Option<ApiResource> {
    let (group, versions) = w.kind.group_versions();
    let served = kube::discovery::group(client, group).await.ok()?;
    let served_versions: Vec<&str> = served.versions().collect();
    let version = versions.iter().find(|v| served_versions.contains(v))?;
    served
        .versioned_resources(version)
        .into_iter()
        .find(|(ar, _)| ar.kind == w.kind.name())
        .map(|(ar, _)| ar)
}

fn fallback(w: &Watched) -> ApiResource {
    let (group, versions) = w.kind.group_versions();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, versions[0], w.kind.name()),
        w.plural,
    )
}

async fn watch_kind(client: Client, kind: Kind, ar: ApiResource, store: KubeStore) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut last_error: Option<String> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => store.relist_start(kind),
            Ok(Event::InitApply(obj)) => {
                let key = convert::key(&obj);
                store.relist_apply(kind, key, log_invalid(convert::convert(kind, &ar, obj)));
            }
            Ok(Event::InitDone) => {
                if last_error.take().is_some() {
                    tracing::info!(%kind, "listed again from the API server");
                }
                store.relist_done(kind);
            }
            Ok(Event::Apply(obj)) => {
                let key = convert::key(&obj);
                store.apply(kind, key, log_invalid(convert::convert(kind, &ar, obj)));
            }
            Ok(Event::Delete(obj)) => store.delete(kind, &convert::key(&obj)),
            Err(e) => {
                // Once per distinct error: a down API server fails every
                // retry the same way.
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(%kind, error = %msg, "watching the API server failed; retrying, the last state keeps serving");
                    last_error = Some(msg);
                }
            }
        }
    }
}

fn watcher(
    api: Api<DynamicObject>,
    config: watcher::Config,
) -> impl futures_util::Stream<Item = std::result::Result<Event<DynamicObject>, watcher::Error>> + Send
{
    kube::runtime::watcher(api, config)
}

fn log_invalid(entry: Entry) -> Entry {
    if let Entry::Invalid(why) = &entry {
        for line in why {
            tracing::warn!("skipping an invalid object; everything else keeps serving: {line}");
        }
    }
    entry
}

/// How long to wait between checks in [`wait_synced`].
const SYNC_POLL: Duration = Duration::from_millis(50);

/// Waits until every kind was listed once, for at most `timeout`; the
/// kinds still missing on timeout.
pub async fn wait_synced(
    store: &KubeStore,
    timeout: Duration,
) -> std::result::Result<(), Vec<Kind>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if store.synced() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(store.unsynced());
        }
        tokio::time::sleep(SYNC_POLL).await;
    }
}
