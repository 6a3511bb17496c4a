//! What every check can look at: the valid resources, the registry built
//! from them and the mesh configuration.

use crate::compile::Compiler;
use crate::config::{Kind, MeshConfig, Resource};
use crate::host::fqdn;
use crate::registry::Registry;

/// The input of every check.
pub struct Context<'a> {
    /// All valid resources.
    pub resources: &'a [Resource],
    /// Mesh-wide settings.
    pub mesh: &'a MeshConfig,
    /// The compiler over the same resources (registry, policy lookups).
    pub compiler: Compiler,
}

impl<'a> Context<'a> {
    /// Builds the context.
    pub fn new(resources: &'a [Resource], mesh: &'a MeshConfig) -> Self {
        Self {
            resources,
            mesh,
            compiler: Compiler::new(resources.to_vec(), mesh.clone()),
        }
    }

    /// Resources of one kind, in load order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.iter().filter(move |r| r.kind == kind)
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        self.compiler.registry()
    }

    /// The root namespace.
    pub fn root_namespace(&self) -> &str {
        &self.compiler.settings().root_namespace
    }

    /// The DNS suffix of in-cluster services.
    pub fn domain_suffix(&self) -> &str {
        &self.compiler.settings().domain_suffix
    }

    /// A host as written in a resource of `namespace`, fully qualified.
    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        fqdn(host, namespace, &self.compiler.settings().domain_suffix)
    }
}
