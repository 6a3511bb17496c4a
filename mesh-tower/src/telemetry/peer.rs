//! Who is on each end of a request, as Istio's metric labels name it: a
//! workload's name, namespace, app, version, canonical service and
//! revision, cluster and principal, derived from its labels the way
//! Istio derives them, and interned so equal peers are one `Arc` (series
//! are then found by pointer, not by comparing a dozen strings).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use mesh_core::config::common::Labels;
use mesh_core::sync::LockExt;

/// Istio's value for a label nothing could fill.
pub const UNKNOWN: &str = "unknown";

/// The cluster id Istio uses when none is configured.
pub const DEFAULT_CLUSTER: &str = "Kubernetes";

/// One end of a request, with every value its labels need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// `source_workload` / `destination_workload`.
    pub workload: Arc<str>,
    /// `*_workload_namespace`.
    pub namespace: Arc<str>,
    /// `*_principal` (`spiffe://...`).
    pub principal: Arc<str>,
    /// `*_app`: the `app` label.
    pub app: Arc<str>,
    /// `*_version`: the `version` label.
    pub version: Arc<str>,
    /// `*_canonical_service`.
    pub canonical_service: Arc<str>,
    /// `*_canonical_revision`.
    pub canonical_revision: Arc<str>,
    /// `*_cluster`.
    pub cluster: Arc<str>,
}

/// What a workload says about itself; [`Peer::of`] turns it into labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// The workload's name (a Deployment's name in Kubernetes).
    pub name: Option<String>,
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its pod labels.
    pub labels: Labels,
    /// Its service account.
    pub service_account: Option<String>,
    /// The cluster it runs in (`CLUSTER_ID`).
    pub cluster: Option<String>,
    /// Its SPIFFE id, when it has a mesh certificate.
    pub principal: Option<String>,
}

fn label<'a>(labels: &'a Labels, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k).map(String::as_str))
        .filter(|v| !v.is_empty())
}

impl Peer {
    /// The peer nothing is known about: every label `unknown`.
    pub fn unknown() -> Arc<Peer> {
        static UNKNOWN_PEER: OnceLock<Arc<Peer>> = OnceLock::new();
        UNKNOWN_PEER
            .get_or_init(|| {
                let u: Arc<str> = Arc::from(UNKNOWN);
                intern(Peer {
                    workload: u.clone(),
                    namespace: u.clone(),
                    principal: u.clone(),
                    app: u.clone(),
                    version: u.clone(),
                    canonical_service: u.clone(),
                    canonical_revision: u.clone(),
                    cluster: u,
                })
            })
            .clone()
    }

    /// The labels of `w`, interned. The canonical service is the
    /// `service.istio.io/canonical-name` label, else `app.kubernetes.io/name`,
    /// else `app`, else the workload name; the canonical revision the
    /// matching `-revision`/`version` labels, else `latest`, as Istio's
    /// injector fills them.
    pub fn of(w: &WorkloadInfo) -> Arc<Peer> {
        let l = &w.labels;
        let workload = w
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| label(l, &["app"]))
            .unwrap_or(UNKNOWN);
        let canonical_service = label(
            l,
            &[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ],
        )
        .unwrap_or(workload);
        let canonical_revision = label(
            l,
            &[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ],
        )
        .unwrap_or("latest");
        intern(Peer {
            workload: workload.into(),
            namespace: w.namespace.as_deref().unwrap_or(UNKNOWN).into(),
            principal: w.principal.as_deref().unwrap_or(UNKNOWN).into(),
            app: label(l, &["app"]).unwrap_or(UNKNOWN).into(),
            version: label(l, &["version"]).unwrap_or(UNKNOWN).into(),
            canonical_service: canonical_service.into(),
            canonical_revision: canonical_revision.into(),
            cluster: w
                .cluster
                .as_deref()
                .filter(|c| !c.is_empty())
                .unwrap_or(UNKNOWN)
                .into(),
        })
    }

    /// This peer with another principal (the verified peer certificate
    /// outranks what the peer said about itself).
    pub fn with_principal(self: &Arc<Peer>, principal: &str) -> Arc<Peer> {
        if &*self.principal == principal {
            return self.clone();
        }
        let mut p = Peer::clone(self);
        p.principal = principal.into();
        intern(p)
    }
}

/// Interns `peer`: equal peers come back as the same `Arc`. Peers are few
/// (one per workload talked to), so the table is never pruned.
pub fn intern(peer: Peer) -> Arc<Peer> {
    static TABLE: OnceLock<Mutex<HashMap<Peer, Arc<Peer>>>> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    let mut t = table.locked();
    if let Some(p) = t.get(&peer) {
        return p.clone();
    }
    let p = Arc::new(peer.clone());
    t.insert(peer, p.clone());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canonical_names_follow_istios_label_order() {
        let w = WorkloadInfo {
            name: Some("reviews-v2".into()),
            namespace: Some("bookinfo".into()),
            labels: labels(&[("app", "reviews"), ("version", "v2")]),
            ..Default::default()
        };
        let p = Peer::of(&w);
        assert_eq!(&*p.canonical_service, "reviews");
        assert_eq!(&*p.canonical_revision, "v2");
        assert_eq!(&*p.cluster, UNKNOWN);
        let w = WorkloadInfo {
            labels: labels(&[
                ("app", "reviews"),
                ("service.istio.io/canonical-name", "reviews-svc"),
            ]),
            ..w
        };
        let p = Peer::of(&w);
        assert_eq!(&*p.canonical_service, "reviews-svc");
        assert_eq!(&*p.canonical_revision, "latest");
        assert_eq!(&*p.version, UNKNOWN);
        // Without labels the workload name is the canonical service.
        let p = Peer::of(&WorkloadInfo {
            name: Some("job-7".into()),
            ..Default::default()
        });
        assert_eq!(&*p.canonical_service, "job-7");
        assert_eq!(&*p.app, UNKNOWN);
    }

    #[test]
    fn equal_peers_are_one_arc() {
        let w = WorkloadInfo {
            name: Some("a".into()),
            ..Default::default()
        };
        assert!(Arc::ptr_eq(&Peer::of(&w), &Peer::of(&w)));
        let p = Peer::of(&w);
        assert!(Arc::ptr_eq(&p.with_principal(UNKNOWN), &p));
        assert!(!Arc::ptr_eq(&p.with_principal("spiffe://x/ns/a/sa/b"), &p));
    }
}
