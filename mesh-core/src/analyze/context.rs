//! What every check can look at: the valid resources, indexed by kind, and
//! the mesh configuration.

use crate::config::{Kind, MeshConfig, Resource};

/// The input of every check.
pub struct Context<'a> {
    /// All valid resources.
    pub resources: &'a [Resource],
    /// Mesh-wide settings.
    pub mesh: &'a MeshConfig,
}

impl<'a> Context<'a> {
    /// Builds the context.
    pub fn new(resources: &'a [Resource], mesh: &'a MeshConfig) -> Self {
        Self { resources, mesh }
    }

    /// Resources of one kind, in load order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.iter().filter(move |r| r.kind == kind)
    }
}
