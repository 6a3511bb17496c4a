//! Compilation: config + registry + client -> [`Model`].
//!
//! The same function serves `meshctl`, local SDK mode and `meshd` (which
//! compiles once per connected client), so there is one place that decides
//! what a client sees: `exportTo`, the client's Sidecar, the DestinationRule
//! lookup order (client namespace, then the service's, then the root
//! namespace), the inbound policy selection, and for a gateway workload
//! ([`Client::router`]) the Gateways that select it ([`gateway`]).

mod clusters;
pub mod gateway;
mod inbound;
mod visibility;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use inbound::{mtls_policy, peer_authn_chain};
pub use visibility::Scope;

use crate::config::{Kind, MeshConfig, Resource};
use crate::host::DEFAULT_DOMAIN_SUFFIX;
use crate::model::{Client, MeshSettings, Model, OutboundPolicy, OutboundService};
use crate::registry::{self, Registry};
use crate::route;

/// Everything compilation needs that does not depend on the client, built
/// once per config version and shared by every client's compilation.
#[derive(Debug, Clone)]
pub struct Compiler {
    resources: Arc<Vec<Resource>>,
    registry: Arc<Registry>,
    mesh: Arc<MeshConfig>,
    settings: MeshSettings,
}

impl Compiler {
    /// Builds the registry and settings for a set of valid resources.
    pub fn new(resources: Vec<Resource>, mesh: MeshConfig) -> Self {
        let registry = registry::build(&resources, &mesh);
        let settings = mesh_settings(&mesh);
        Self {
            resources: Arc::new(resources),
            registry: Arc::new(registry),
            mesh: Arc::new(mesh),
            settings,
        }
    }

    /// The resources.
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The mesh config.
    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    /// Mesh-wide settings.
    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// Resources of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.resources.iter().filter(move |r| r.kind == kind)
    }

    /// What `client` may see: its Sidecar, visible services and VirtualServices.
    pub fn scope<'a>(&'a self, client: &'a Client) -> Scope<'a> {
        Scope::new(self, client)
    }

    /// Compiles the model for one client.
    pub fn compile(&self, client: &Client) -> Model {
        // A gateway workload serves as the Gateways that select it, and
        // route compilation filters VirtualServices by those names.
        let selected = if client.router {
            gateway::selected(self, &client.labels)
        } else {
            Vec::new()
        };
        let as_gateway;
        let client = if client.router {
            as_gateway = Client {
                gateways: selected.iter().map(|r| r.ns_name()).collect(),
                ..client.clone()
            };
            &as_gateway
        } else {
            client
        };
        let scope = self.scope(client);
        let mut mesh = self.settings.clone();
        if let Some(policy) = scope.outbound_policy() {
            mesh.outbound_policy = policy;
        }
        let virtual_services = route::virtual_services(scope.virtual_services());
        let index = route::VsIndex::new(&virtual_services, client, &mesh.domain_suffix);
        let drs = clusters::DrIndex::new(self, &scope);
        let mut outbound = BTreeMap::new();
        let mut clusters = BTreeMap::new();
        for svc in scope.services() {
            for port in &svc.ports {
                let routes = route::compile_route_table_in(
                    &index,
                    &virtual_services,
                    client,
                    &svc.hostname,
                    Some(port.number),
                    &mesh.domain_suffix,
                );
                outbound.insert(
                    format!("{}:{}", svc.hostname, port.number),
                    OutboundService {
                        host: svc.hostname.clone(),
                        port: port.number,
                        protocol: port.protocol,
                        mesh_external: svc.mesh_external,
                        routes: Arc::new(routes),
                    },
                );
                for c in clusters::build(self, &drs, client, svc, port) {
                    clusters.insert(c.name.clone(), c);
                }
            }
        }
        let gateway = client.router.then(|| {
            Arc::new(gateway::build(
                &selected,
                &virtual_services,
                client,
                &self.registry,
                &mesh.domain_suffix,
            ))
        });
        let telemetry = crate::telemetry::policy_for_resources(
            &self.resources,
            &self.mesh,
            crate::telemetry::Workload {
                namespace: &client.namespace,
                labels: &client.labels,
            },
        );
        Model {
            client: client.clone(),
            inbound: inbound::build(self, client),
            telemetry: Arc::new(telemetry),
            mesh,
            outbound,
            clusters,
            gateway,
        }
    }
}

/// Compiles a model in one call (builds a throwaway [`Compiler`]).
pub fn compile(resources: &[Resource], mesh: &MeshConfig, client: &Client) -> Model {
    Compiler::new(resources.to_vec(), mesh.clone()).compile(client)
}

fn mesh_settings(mesh: &MeshConfig) -> MeshSettings {
    MeshSettings {
        root_namespace: mesh.root_namespace().to_string(),
        trust_domain: mesh.trust_domain().to_string(),
        trust_domain_aliases: mesh.trust_domain_aliases.clone(),
        domain_suffix: DEFAULT_DOMAIN_SUFFIX.to_string(),
        outbound_policy: if mesh.registry_only() {
            OutboundPolicy::RegistryOnly
        } else {
            OutboundPolicy::AllowAny
        },
        path_normalization: mesh.path_normalization(),
    }
}
