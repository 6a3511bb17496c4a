//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`): what the
//! server knows about each connected client's config, for
//! `meshctl proxy-config` and `istioctl`-style tools.
//!
//! One `ClientConfig` per connected node, with a `GenericXdsConfig` per
//! resource the client holds or is being sent:
//! - `SYNCED` / `ACKED`: the client ACKed the response that carried it.
//! - `STALE`: sent, no ACK or NACK yet (`client_status` says whether the
//!   client had ACKed an earlier version of it).
//! - `ERROR` / `NACKED`: the client rejected the response that carried it;
//!   `error_state` has the rejected resource, version and the client's
//!   message; `version_info` and `xds_config` are what it still runs.
//! - `NOT_SENT`: the node's snapshot has content the client was not sent
//!   yet (held back by make-before-break, or a push in flight).
//!
//! `node_matchers` select nodes by id (`StringMatcher`: exact, prefix,
//! suffix, contains, safe_regex; OR across matchers). Metadata matchers are
//! refused with INVALID_ARGUMENT rather than silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::time::SystemTime;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::r#type::matcher::v3::NodeMatcher;
use envoy_types::pb::envoy::service::status::v3::{
    client_config::GenericXdsConfig,
    client_status_discovery_service_server::{
        ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
    },
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::cache::{resource_version, NodeStatus, SnapshotCache};
use super::record::{collect, NodeRecord, TypeRecord};
use super::stream::wildcard_type;

/// The CSDS service over the same cache the ADS server records into.
#[derive(Debug, Clone)]
pub struct CsdsServer {
    cache: SnapshotCache,
}

impl CsdsServer {
    /// A CSDS server reporting on `cache` (share it with the
    /// [`super::AdsServer`]).
    pub fn new(cache: SnapshotCache) -> Self {
        Self { cache }
    }

    /// The tonic service to add to a `Server`.
    pub fn into_service(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The answer to one request: a `ClientConfig` per connected node that
    /// the request's matchers select.
    pub fn client_status(&self, req: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let matchers = req
            .node_matchers
            .iter()
            .map(IdMatcher::new)
            .collect::<Result<Vec<_>, _>>()?;
        let config = self
            .cache
            .records()
            .into_iter()
            .filter(|(id, _)| matchers.is_empty() || matchers.iter().any(|m| m.matches(id)))
            .map(|(id, rec)| {
                let status = self.cache.status(&id);
                client_config(
                    &self.cache,
                    &id,
                    &rec,
                    &status,
                    req.exclude_resource_contents,
                )
            })
            .collect();
        Ok(ClientStatusResponse { config })
    }
}

/// A node id matcher from a `NodeMatcher` (no `node_id`: any node).
struct IdMatcher(Option<mesh_core::matcher::StringMatcher>);

impl IdMatcher {
    fn new(m: &NodeMatcher) -> Result<Self, Status> {
        if !m.node_metadatas.is_empty() {
            return Err(Status::invalid_argument(
                "CSDS node_matchers: node_metadatas matching is not supported; match on node_id",
            ));
        }
        match &m.node_id {
            Some(sm) if sm.match_pattern.is_some() => crate::matcher::decode_string(sm)
                .map(|m| Self(Some(m)))
                .map_err(|e| Status::invalid_argument(format!("CSDS node_matchers: node_id: {e}"))),
            _ => Ok(Self(None)),
        }
    }

    fn matches(&self, id: &str) -> bool {
        self.0.as_ref().is_none_or(|m| m.matches(id))
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn client_config(
    cache: &SnapshotCache,
    id: &str,
    rec: &NodeRecord,
    status: &NodeStatus,
    exclude: bool,
) -> ClientConfig {
    let snap = cache.snapshot(id);
    let mut generic = Vec::new();
    for (type_url, tr) in &rec.types {
        let st = status.get(type_url).cloned().unwrap_or_default();
        let mut out = type_configs(type_url, tr, &st, exclude);
        // Content in the snapshot the client was not sent yet.
        if let Some(s) = &snap {
            let held: BTreeSet<String> = out.iter().map(|g| g.name.clone()).collect();
            let in_flight: BTreeMap<String, String> = tr
                .sent
                .as_ref()
                .map(|(h, _)| {
                    collect(h.as_ref())
                        .into_iter()
                        .map(|(n, (_, a))| (n, resource_version(&a)))
                        .collect()
                })
                .unwrap_or_default();
            for (name, a) in s.resources(type_url).into_iter().flatten() {
                if in_flight.get(name).map(String::as_str) == s.resource_version(type_url, name) {
                    continue;
                }
                let known = held.contains(name);
                if !known && !wildcard_type(type_url) {
                    // RDS/EDS: the client may not subscribe to it.
                    continue;
                }
                if let Some(g) = out.iter_mut().find(|g| g.name == *name) {
                    g.config_status = ConfigStatus::NotSent as i32;
                } else {
                    out.push(GenericXdsConfig {
                        type_url: type_url.clone(),
                        name: name.clone(),
                        version_info: s.version(type_url).unwrap_or_default().to_string(),
                        xds_config: (!exclude).then(|| a.clone()),
                        config_status: ConfigStatus::NotSent as i32,
                        client_status: ClientResourceStatus::Unknown as i32,
                        ..Default::default()
                    });
                }
            }
        }
        generic.extend(out);
    }
    ClientConfig {
        node: Some(rec.node.clone()),
        generic_xds_configs: generic,
        ..Default::default()
    }
}

/// The resources of one type the client holds or is being sent.
fn type_configs(
    type_url: &str,
    tr: &TypeRecord,
    st: &super::cache::TypeStatus,
    exclude: bool,
) -> Vec<GenericXdsConfig> {
    let sent = tr
        .sent
        .as_ref()
        .map(|(h, t)| (h.version().to_string(), collect(h.as_ref()), *t));
    let acked = tr
        .acked
        .as_ref()
        .map(|(h, t)| (h.version().to_string(), collect(h.as_ref()), *t));
    let empty = BTreeMap::new();
    let sent_map = sent.as_ref().map_or(&empty, |s| &s.1);
    let acked_map = acked.as_ref().map_or(&empty, |s| &s.1);
    let sent_v = sent.as_ref().map(|s| s.0.as_str());
    let acked_v = acked.as_ref().map(|s| s.0.as_str());
    let nacked = st
        .last_nack
        .as_ref()
        .filter(|n| Some(n.rejected_version.as_str()) == sent_v);
    let pending = sent_v != acked_v && nacked.is_none();
    let names: BTreeSet<&String> = sent_map.keys().chain(acked_map.keys()).collect();
    let content = |a: &Any| (!exclude).then(|| a.clone());
    names
        .into_iter()
        .map(|name| {
            let s = sent_map.get(name);
            let a = acked_map.get(name);
            let mut g = GenericXdsConfig {
                type_url: type_url.to_string(),
                name: name.clone(),
                ..Default::default()
            };
            let client = if a.is_some() {
                ClientResourceStatus::Acked
            } else {
                ClientResourceStatus::Requested
            };
            let with_acked = |g: &mut GenericXdsConfig| {
                if let (Some((v, x)), Some(ac)) = (a, &acked) {
                    g.version_info = v.clone();
                    g.xds_config = content(x);
                    g.last_updated = Some(timestamp(ac.2));
                }
            };
            match (nacked, s) {
                (Some(n), Some((v, x))) => {
                    with_acked(&mut g);
                    g.config_status = ConfigStatus::Error as i32;
                    g.client_status = ClientResourceStatus::Nacked as i32;
                    g.error_state = Some(UpdateFailureState {
                        failed_configuration: content(x),
                        last_update_attempt: tr.nacked_at.map(timestamp),
                        details: n.message.clone(),
                        version_info: v.clone(),
                    });
                }
                (None, Some((v, x))) if pending => {
                    g.version_info = v.clone();
                    g.xds_config = content(x);
                    g.last_updated = sent.as_ref().map(|s| timestamp(s.2));
                    g.config_status = ConfigStatus::Stale as i32;
                    g.client_status = client as i32;
                }
                _ if pending => {
                    // Removed in the pending response.
                    with_acked(&mut g);
                    g.config_status = ConfigStatus::Stale as i32;
                    g.client_status = client as i32;
                }
                _ => {
                    with_acked(&mut g);
                    g.config_status = if a.is_some() {
                        ConfigStatus::Synced as i32
                    } else {
                        ConfigStatus::Unknown as i32
                    };
                    g.client_status = client as i32;
                }
            }
            g
        })
        .collect()
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsServer {
    type StreamClientStatusStream = ResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let this = self.clone();
        let out = request
            .into_inner()
            .map(move |r| r.and_then(|req| this.client_status(&req)));
        Ok(Response::new(Box::pin(out)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.client_status(request.get_ref()).map(Response::new)
    }
}
