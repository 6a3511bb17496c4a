//! The routing decision as a request extension, read by the layers below
//! the route layer (mirror, timeout, retry, fault).
//!
//! The route layer matches once per request and records the result here;
//! the other layers look up the route through cheap `Arc` clones instead of
//! matching again. The first attempt's [`crate::Upstream`] is a separate
//! extension, which the retry layer replaces per attempt.

use std::sync::Arc;

use mesh_core::model::Model;
use mesh_core::route::{Destination, Route, RouteTable};

/// The route a request matched and the destination chosen for it.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The model snapshot the request started with.
    pub model: Arc<Model>,
    /// The route table of the destination service, `None` for passthrough
    /// requests (unknown host under ALLOW_ANY).
    pub table: Option<Arc<RouteTable>>,
    /// Index of the matched route in `table`.
    pub route_index: usize,
    /// Index of the chosen destination in the route's destinations.
    pub destination_index: usize,
    /// The destination port (the request's for passthrough).
    pub port: u16,
    /// True for gRPC requests (errors become gRPC statuses).
    pub grpc: bool,
}

impl Routed {
    /// The matched route (`None` for passthrough requests).
    pub fn route(&self) -> Option<&Route> {
        self.table.as_ref()?.routes.get(self.route_index)
    }

    /// The chosen destination (`None` for passthrough requests).
    pub fn destination(&self) -> Option<&Destination> {
        self.route()?.destinations().get(self.destination_index)
    }
}
