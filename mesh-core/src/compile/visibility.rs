//! What one client may see: `exportTo` of services, VirtualServices and
//! DestinationRules, and the egress hosts of the client's Sidecar.
//!
//! The Sidecar that applies is, as in Istio: the one in the client's
//! namespace whose `workloadSelector` matches the client (oldest first), else
//! the namespace's Sidecar without selector, else the root namespace's
//! Sidecar without selector. Without any, everything exported is visible.

use crate::config::networking::sidecar::Sidecar;
use crate::config::{Kind, Resource};
use crate::host::{fqdn, host_matches};
use crate::model::{Client, OutboundPolicy};
use crate::registry::{ExportTo, Service};

use super::Compiler;

/// The view of the config one client has.
pub struct Scope<'a> {
    compiler: &'a Compiler,
    client: &'a Client,
    sidecar: Option<&'a Resource>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(compiler: &'a Compiler, client: &'a Client) -> Self {
        let sidecar = select_sidecar(compiler, client);
        Self {
            compiler,
            client,
            sidecar,
        }
    }

    /// The Sidecar resource that applies to the client, if any.
    pub fn sidecar(&self) -> Option<&'a Resource> {
        self.sidecar
    }

    fn sidecar_spec(&self) -> Option<&'a Sidecar> {
        self.sidecar.and_then(Resource::sidecar)
    }

    /// The outbound traffic policy the Sidecar sets, overriding the mesh's.
    pub fn outbound_policy(&self) -> Option<OutboundPolicy> {
        let policy = self.sidecar_spec()?.outbound_traffic_policy.as_ref()?;
        // A policy block without a mode is REGISTRY_ONLY, the proto default.
        Some(if policy.mode.is_none_or(|m| m.is_registry_only()) {
            OutboundPolicy::RegistryOnly
        } else {
            OutboundPolicy::AllowAny
        })
    }

    /// True when the Sidecar's egress hosts admit `host` declared in `namespace`.
    pub fn egress_allows(&self, namespace: &str, host: &str) -> bool {
        let Some(sidecar) = self.sidecar_spec() else {
            return true;
        };
        let own_ns = self
            .sidecar
            .map(|r| r.meta.namespace.as_str())
            .unwrap_or(self.client.namespace.as_str());
        sidecar.egress.iter().any(|listener| {
            listener.hosts.iter().any(|entry| {
                let Some((ns, dns)) = entry.split_once('/') else {
                    return false;
                };
                let ns_ok = match ns {
                    "*" => true,
                    "~" => false,
                    "." => namespace == own_ns,
                    other => namespace == other,
                };
                ns_ok && host_matches(dns, host)
            })
        })
    }

    /// Services the client may call.
    pub fn services(&self) -> impl Iterator<Item = &'a Service> + '_ {
        self.compiler.registry().services.iter().filter(move |s| {
            s.export_to.visible_to(&self.client.namespace)
                && self.egress_allows(&s.namespace, &s.hostname)
        })
    }

    /// VirtualServices that apply to the client's outbound traffic.
    pub fn virtual_services(&self) -> impl Iterator<Item = &'a Resource> + '_ {
        let defaults = &self.compiler.mesh().default_virtual_service_export_to;
        self.compiler
            .of_kind(Kind::VirtualService)
            .filter(move |r| {
                let Some(vs) = r.virtual_service() else {
                    return false;
                };
                ExportTo::parse(&vs.export_to, &r.meta.namespace, defaults)
                    .visible_to(&self.client.namespace)
                    && (self.sidecar.is_none()
                        || vs.hosts.iter().any(|h| {
                            let h = fqdn(
                                h,
                                &r.meta.namespace,
                                &self.compiler.settings().domain_suffix,
                            );
                            self.egress_allows(&r.meta.namespace, &h)
                                || self
                                    .compiler
                                    .registry()
                                    .services_named(&h)
                                    .any(|s| self.egress_allows(&s.namespace, &h))
                        }))
            })
    }

    /// True when a DestinationRule resource is visible to the client.
    pub fn destination_rule_visible(&self, r: &Resource) -> bool {
        let Some(dr) = r.destination_rule() else {
            return false;
        };
        let defaults = &self.compiler.mesh().default_destination_rule_export_to;
        if !ExportTo::parse(&dr.export_to, &r.meta.namespace, defaults)
            .visible_to(&self.client.namespace)
        {
            return false;
        }
        match &dr.workload_selector {
            // A DR with a workload selector applies only to matching
            // workloads in its own namespace.
            Some(sel) => {
                r.meta.namespace == self.client.namespace && sel.matches(&self.client.labels)
            }
            None => true,
        }
    }
}

fn select_sidecar<'a>(compiler: &'a Compiler, client: &Client) -> Option<&'a Resource> {
    let sidecars = || compiler.of_kind(Kind::Sidecar);
    let selector_matches = |r: &Resource| {
        r.sidecar()
            .and_then(|s| s.workload_selector.as_ref())
            .is_some_and(|sel| sel.matches(&client.labels))
    };
    let no_selector = |r: &Resource| r.sidecar().is_some_and(|s| s.workload_selector.is_none());
    sidecars()
        .find(|r| r.meta.namespace == client.namespace && selector_matches(r))
        .or_else(|| sidecars().find(|r| r.meta.namespace == client.namespace && no_selector(r)))
        .or_else(|| {
            let root = &compiler.settings().root_namespace;
            sidecars().find(|r| &r.meta.namespace == root && no_selector(r))
        })
}
