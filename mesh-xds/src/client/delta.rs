//! The client half of the Delta (incremental) protocol, on the same state
//! as SotW ([`SotwState`]): the same validation, consistency rules and
//! does-not-exist timer; only what travels differs.
//!
//! - Subscriptions travel as changes (`resource_names_subscribe` /
//!   `_unsubscribe`); LDS and CDS subscribe to `*`.
//! - A response carries only the resources that changed, each with its
//!   own version, and `removed_resources`: for every type, a removal is a
//!   deletion; a subscribed RDS/EDS name the server removes is absent at
//!   once, without waiting for the timer.
//! - On a new stream, `initial_resource_versions` says what the client
//!   holds, so the server sends only what differs.
//! - ACK is the response nonce alone; NACK adds `error_detail` and the
//!   whole response is rejected, as in SotW.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio::time::Instant;

use super::state::{short, type_static, SotwState, INVALID_ARGUMENT, TYPES};
use super::{validate, NackInfo};
use crate::types;

fn wildcard(type_url: &str) -> bool {
    type_url == types::LISTENER || type_url == types::CLUSTER
}

impl SotwState {
    fn held_versions(&self, type_url: &str) -> std::collections::HashMap<String, String> {
        self.versions
            .iter()
            .filter(|((t, _), _)| *t == type_url)
            .map(|((_, n), v)| (n.clone(), v.clone()))
            .collect()
    }

    /// A new Delta stream: the first request of each type (LDS and CDS
    /// wildcard, the named subscriptions already known), with the versions
    /// held.
    pub(crate) fn delta_on_connect(&mut self, now: Instant) -> Vec<DeltaDiscoveryRequest> {
        self.connected = true;
        for st in self.types.values_mut() {
            st.nonce.clear();
        }
        self.arm_timers(now);
        TYPES
            .iter()
            .filter_map(|t| {
                let names: Vec<String> = if wildcard(t) {
                    vec!["*".to_string()]
                } else {
                    self.types.get(t)?.names.iter().cloned().collect()
                };
                if names.is_empty() {
                    return None;
                }
                Some(DeltaDiscoveryRequest {
                    type_url: t.to_string(),
                    resource_names_subscribe: names,
                    initial_resource_versions: self.held_versions(t),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// Handles one Delta response: the ACK or NACK, then any subscription
    /// changes it causes; and whether it was accepted.
    pub(crate) fn delta_on_response(
        &mut self,
        resp: &DeltaDiscoveryResponse,
        now: Instant,
    ) -> (Vec<DeltaDiscoveryRequest>, bool) {
        let type_url = type_static(&resp.type_url);
        let nack = |message: String| DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        };
        if type_url.is_empty() {
            return (
                vec![nack(format!(
                    "type {} was not subscribed to",
                    resp.type_url
                ))],
                false,
            );
        }
        self.ts(type_url).nonce = resp.nonce.clone();
        if let Err(e) = self.delta_apply(type_url, resp) {
            let message = format!(
                "{} (delta, system version {:?}): {e}",
                short(type_url),
                resp.system_version_info
            );
            tracing::warn!(%message, "xDS response rejected (NACK); the last good resources stay");
            let st = self.ts(type_url);
            st.nacks += 1;
            st.last_nack = Some(NackInfo {
                version: resp.system_version_info.clone(),
                message: message.clone(),
            });
            return (vec![nack(message)], false);
        }
        let st = self.ts(type_url);
        st.version = resp.system_version_info.clone();
        st.last_nack = None;
        st.acked = true;
        let mut requests = vec![DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        }];
        for c in self.resubscribe(now) {
            requests.push(DeltaDiscoveryRequest {
                type_url: c.type_url.to_string(),
                resource_names_subscribe: c.added,
                resource_names_unsubscribe: c.removed,
                ..Default::default()
            });
        }
        (requests, true)
    }

    fn delta_apply(
        &mut self,
        type_url: &'static str,
        resp: &DeltaDiscoveryResponse,
    ) -> Result<(), String> {
        // Entries without a body only refresh a TTL; nothing to apply.
        let items: Vec<(&str, &str, &Any)> = resp
            .resources
            .iter()
            .filter_map(|r| Some((r.name.as_str(), r.version.as_str(), r.resource.as_ref()?)))
            .collect();
        if let Some((n, _, a)) = items.iter().find(|(_, _, a)| a.type_url != type_url) {
            return Err(format!(
                "{n}: a resource of type {} in a {type_url} response",
                a.type_url
            ));
        }
        let anys = items.iter().map(|(_, _, a)| *a);
        let versions: BTreeMap<(&'static str, String), String> = items
            .iter()
            .map(|(n, v, _)| ((type_url, n.to_string()), v.to_string()))
            .collect();
        // `removed_resource_names` is the newer spelling of the same list.
        let removed: Vec<String> = resp
            .removed_resources
            .iter()
            .cloned()
            .chain(resp.removed_resource_names.iter().map(|r| r.name.clone()))
            .collect();
        let removed = &removed;
        match type_url {
            types::LISTENER => {
                let (client, inbound) =
                    validate::listeners(validate::decode_all::<Listener>(anys)?)?;
                for n in removed {
                    self.listeners.remove(n);
                    self.inbound.remove(n);
                }
                for (l, r) in client {
                    self.listeners.insert(l.name.clone(), (l, r));
                }
                for l in inbound {
                    self.inbound.insert(l.name.clone(), l);
                }
                self.have_lds = true;
            }
            types::ROUTE => {
                let all: Vec<RouteConfiguration> = validate::decode_all(anys)?;
                validate::routes(&all)?;
                for n in removed {
                    self.routes.remove(n);
                    self.gone(type_url, n);
                }
                for rc in all {
                    self.absent.remove(&(type_url, rc.name.clone()));
                    self.routes.insert(rc.name.clone(), rc);
                }
            }
            types::CLUSTER => {
                let all: Vec<Cluster> = validate::decode_all(anys)?;
                validate::clusters(&all)?;
                for n in removed {
                    self.clusters.remove(n);
                }
                for c in all {
                    self.absent.remove(&(type_url, c.name.clone()));
                    self.clusters.insert(c.name.clone(), c);
                }
                self.have_cds = true;
            }
            _ => {
                let all: Vec<ClusterLoadAssignment> = validate::decode_all(anys)?;
                validate::endpoints(&all)?;
                for n in removed {
                    self.endpoints.remove(n);
                    self.gone(type_url, n);
                }
                for cla in all {
                    self.absent.remove(&(type_url, cla.cluster_name.clone()));
                    self.endpoints.insert(cla.cluster_name.clone(), cla);
                }
            }
        }
        for n in removed {
            self.versions.remove(&(type_url, n.clone()));
        }
        self.versions.extend(versions);
        Ok(())
    }

    /// The server says a subscribed name does not exist: absent now.
    fn gone(&mut self, type_url: &'static str, name: &str) {
        if self
            .types
            .get(type_url)
            .is_some_and(|s| s.names.contains(name))
        {
            self.pending.remove(&(type_url, name.to_string()));
            self.absent.insert((type_url, name.to_string()));
        }
    }
}
