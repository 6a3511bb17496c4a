//! The JSON behind `/debug/configz`, `/debug/syncz` and `/debug/adsz`:
//! what config is served, what each connected node has acknowledged, and
//! which streams are open. `meshctl proxy-status` reads `syncz`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use crate::controller::Controller;
use crate::metrics::type_label;

/// Serializes a time as seconds since the Unix epoch.
pub fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(secs(*t))
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `/debug/configz`.
pub fn configz(ctl: &Controller, config_dir: &Path) -> Value {
    configz_with(ctl, config_dir, None, false)
}

/// `/debug/configz`, with what the Kubernetes source holds when it is one.
pub fn configz_with(
    ctl: &Controller,
    config_dir: &Path,
    kube: Option<&crate::kube::KubeStore>,
    leader: bool,
) -> Value {
    let generation = ctl.generation();
    let rejection = ctl.rejection();
    let kubernetes = kube.map(|k| {
        json!({
            "synced": k.synced(),
            "unsynced": k.unsynced().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "lists": k.relists(),
            "objects": k.counts(),
            "leader": leader,
            "inGeneration": generation.as_ref().map(|g| g.kube_objects),
            "skipped": generation.as_ref().map(|g| g.skipped.iter().map(|(key, why)| json!({
                "object": key,
                "why": why,
            })).collect::<Vec<_>>()).unwrap_or_default(),
        })
    });
    json!({
        "kubernetes": kubernetes,
        "configDir": config_dir.display().to_string(),
        "generation": generation.as_ref().map(|g| g.number),
        "appliedAt": generation.as_ref().map(|g| secs(g.applied_at)),
        "files": generation.as_ref().map(|g| g.files.clone()).unwrap_or_default(),
        "resources": generation.as_ref().map(|g| g.resources.len()).unwrap_or(0),
        "findings": generation.as_ref().map(|g| g.findings.iter().map(|f| json!({
            "code": f.code,
            "severity": f.severity.to_string(),
            "resource": f.resource,
            "file": f.file,
            "line": f.line,
            "message": f.message,
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "rejections": ctl.rejections(),
        "lastRejection": rejection.as_ref().map(|r| json!({
            "at": secs(r.at),
            "errors": r.errors,
            "message": r.message(),
        })),
        "autoRegistered": ctl.registrations().iter().map(|r| json!({
            "node": r.node_id,
            "group": r.group,
            "workloadEntry": r.resource.key(),
            "address": r.resource.workload_entry().and_then(|w| w.address.clone()),
        })).collect::<Vec<_>>(),
    })
}

/// Sync state of one type on one node, as `meshctl proxy-status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TypeSync {
    /// `SYNCED` (the current version ACKed), `STALE` (a newer version
    /// pending or held back), `NACKED` (the client rejected the latest
    /// version) or `NOT SENT` (the type was never asked for).
    pub state: &'static str,
    /// The version the node should have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Last version sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// Last version ACKed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked: Option<String>,
    /// Sent and not answered yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// Held back by make-before-break (it needs clusters not ACKed yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The last NACK's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nack: Option<String>,
    /// NACKs in total.
    pub nacks: u64,
}

/// One row of `/debug/syncz`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSync {
    /// Node id.
    pub node: String,
    /// Namespace.
    pub namespace: String,
    /// Open streams.
    pub streams: usize,
    /// By `CDS`, `LDS`, `RDS`, `EDS`.
    pub types: BTreeMap<String, TypeSync>,
}

/// `/debug/syncz`.
pub fn syncz(ctl: &Controller) -> Vec<NodeSync> {
    let cache = ctl.cache();
    cache
        .connected()
        .into_iter()
        .map(|c| {
            let snap = cache.snapshot(&c.info.id);
            let status = cache.status(&c.info.id);
            let mut types = BTreeMap::new();
            for t in mesh_xds::server::PUSH_ORDER {
                let current = snap.as_ref().and_then(|s| s.version(t).map(str::to_string));
                let st = status.get(t).cloned().unwrap_or_default();
                let state = if st.sent.is_none() && st.acked.is_none() && st.last_nack.is_none() {
                    "NOT SENT"
                } else if st.last_nack.is_some() {
                    "NACKED"
                } else if st.acked.is_some() && st.acked == current {
                    "SYNCED"
                } else {
                    "STALE"
                };
                types.insert(
                    type_label(t).to_uppercase(),
                    TypeSync {
                        state,
                        current,
                        sent: st.sent,
                        acked: st.acked,
                        pending: st.pending,
                        held: st.held,
                        nack: st.last_nack.map(|n| n.message),
                        nacks: st.nacks,
                    },
                );
            }
            NodeSync {
                namespace: c.info.namespace.clone().unwrap_or_else(|| "default".into()),
                node: c.info.id,
                streams: c.streams,
                types,
            }
        })
        .collect()
}

/// `/debug/adsz`.
pub fn adsz(ctl: &Controller) -> Value {
    let nodes = ctl.nodes();
    let connected = ctl.cache().connected();
    Value::Array(
        connected
            .into_iter()
            .map(|c| {
                let entry = nodes.get(&c.info.id);
                json!({
                    "node": c.info.id,
                    "namespace": c.info.namespace,
                    "labels": c.info.labels,
                    "serviceAccount": c.info.service_account,
                    "instanceIps": c.info.instance_ips,
                    "peer": c.peer.map(|p| p.to_string()),
                    "streams": entry.map(|e| e.streams.iter().map(|(id, s)| json!({
                        "id": id,
                        "peer": s.peer.map(|p| p.to_string()),
                        "since": secs(s.since),
                    })).collect::<Vec<_>>()).unwrap_or_default(),
                    "streamCount": c.streams,
                    "autoRegistrationError": entry.and_then(|e| e.registration_error.clone()),
                })
            })
            .collect(),
    )
}
