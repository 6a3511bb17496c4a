//! What the leader writes back to the cluster:
//!
//! * the `istio-ca-root-cert` ConfigMap (`root-cert.pem`) in every
//!   namespace, which workloads mount to trust meshd and each other, as
//!   istiod publishes it;
//! * analysis into each Istio object's `status`: the analyzer's findings
//!   as Istio's `validationMessages`, and for an object meshd skipped, a
//!   `Reconciled: False` condition saying why, so `kubectl get -o yaml`
//!   shows what `meshctl analyze` would.
//!
//! Writes happen only while this replica leads, and only when what would
//! be written differs from what this leader wrote last.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::Client;
use mesh_core::analyze::Severity;
use mesh_core::config::Kind;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::convert::CLUSTER_ORIGIN;
use super::store::KubeStore;
use crate::controller::Controller;

/// The ConfigMap holding the mesh root in every namespace.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Its key.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// The field manager of meshd's writes.
pub const FIELD_MANAGER: &str = "meshd";

/// How often the leader looks for new namespaces and config generations.
const TICK: Duration = Duration::from_millis(200);

/// Publishes the root into every namespace the store knows, while
/// `leader` is true, and all of them again every `resync`, so a ConfigMap
/// that was deleted or edited comes back (an unchanged apply writes
/// nothing).
pub async fn root_configmaps(
    client: Client,
    store: KubeStore,
    root_pem: String,
    resync: Duration,
    mut leader: watch::Receiver<bool>,
) {
    let mut done: HashSet<String> = HashSet::new();
    let mut seen_version = None;
    let mut last_full = tokio::time::Instant::now();
    loop {
        if !*leader.borrow_and_update() {
            done.clear();
            seen_version = None;
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        if last_full.elapsed() >= resync {
            last_full = tokio::time::Instant::now();
            done.clear();
            seen_version = None;
        }
        let version = store.version();
        if seen_version != Some(version) {
            seen_version = Some(version);
            for ns in store.names(Kind::Namespace) {
                if done.contains(&ns) {
                    continue;
                }
                match apply_root(&client, &ns, &root_pem).await {
                    Ok(()) => {
                        done.insert(ns);
                    }
                    Err(e) => {
                        // Tried again on the next change; a terminating
                        // namespace refuses writes for good.
                        seen_version = None;
                        tracing::warn!(namespace = ns, error = %e, "cannot publish istio-ca-root-cert");
                    }
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn apply_root(client: &Client, ns: &str, root_pem: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIGMAP.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(
                "istio.io/config".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_string(),
            root_pem.to_string(),
        )])),
        ..Default::default()
    };
    api.patch(
        ROOT_CERT_CONFIGMAP,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map(|_| ())
}

/// The status meshd wants on each cluster object it has something to say
/// about, by `Kind/namespace/name`.
pub fn desired_statuses(ctl: &Controller) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let Some(g) = ctl.generation() else {
        return BTreeMap::new();
    };
    for f in &g.findings {
        if !f.file.starts_with(CLUSTER_ORIGIN) || f.resource.is_empty() {
            continue;
        }
        let level = match f.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        };
        out.entry(f.resource.clone()).or_default().0.push(json!({
            "type": {"code": f.code, "name": f.code},
            "level": level,
            "description": f.message,
        }));
    }
    for (key, why) in &g.skipped {
        out.entry(key.clone()).or_default().1.push(json!({
            "type": "Reconciled",
            "status": "False",
            "reason": "Invalid",
            "message": format!("meshd skipped this object; everything else keeps serving: {}", why.join("; ")),
        }));
    }
    out.into_iter()
        .map(|(k, (messages, conditions))| {
            (
                k,
                json!({"validationMessages": messages, "conditions": conditions}),
            )
        })
        .collect()
}

/// Writes [`desired_statuses`] while `leader` is true: a status that
/// changed is patched, one that went away is cleared. Kinds without an
/// entry in `resources` (not Istio's, or not served) are not written.
pub async fn statuses(
    client: Client,
    ctl: Controller,
    resources: HashMap<Kind, ApiResource>,
    mut leader: watch::Receiver<bool>,
) {
    let mut written: BTreeMap<String, Value> = BTreeMap::new();
    let mut seen_generation = None;
    loop {
        if !*leader.borrow_and_update() {
            written.clear();
            seen_generation = None;
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        let generation = ctl.generation().map(|g| g.number);
        if generation != seen_generation {
            seen_generation = generation;
            let mut want = desired_statuses(&ctl);
            let cleared: Vec<String> = written
                .keys()
                .filter(|k| !want.contains_key(*k))
                .cloned()
                .collect();
            for k in cleared {
                want.insert(k, json!({"validationMessages": [], "conditions": []}));
            }
            for (key, status) in want {
                if written.get(&key) == Some(&status) {
                    continue;
                }
                match write_status(&client, &resources, &key, &status).await {
                    Ok(true) => {
                        written.insert(key, status);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        seen_generation = None;
                        tracing::warn!(object = key, error = %e, "cannot write status");
                    }
                }
            }
            written.retain(|_, v| {
                v["validationMessages"] != json!([]) || v["conditions"] != json!([])
            });
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Patches `status` of `Kind/namespace/name`; `Ok(false)` when the kind
/// has no status to write to.
async fn write_status(
    client: &Client,
    resources: &HashMap<Kind, ApiResource>,
    key: &str,
    status: &Value,
) -> Result<bool, kube::Error> {
    let mut parts = key.splitn(3, '/');
    let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(false);
    };
    let Some((_, ar)) = resources.iter().find(|(k, _)| k.name() == kind) else {
        return Ok(false);
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(true),
        // Deleted meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
