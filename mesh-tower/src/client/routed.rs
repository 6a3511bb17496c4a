//! The routing decision, read by the layers below the route layer
//! (mirror, timeout, retry, fault).
//!
//! The route layer matches once per request and records the result in the
//! request's [`crate::Upstream`] (one extension per request, not two: each
//! costs an allocation and a lookup); the other layers look up the route
//! through it instead of matching again.

use http::Request;
use mesh_core::route::{Destination, Route, RouteTable};

use crate::handle::Handle;
use crate::upstream::Upstream;

/// The routing decision of `req`, when the route layer made one.
pub fn of<B>(req: &Request<B>) -> Option<&Routed> {
    req.extensions().get::<Upstream>()?.routed.as_ref()
}

/// The route a request matched and the destination chosen for it.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The route table of the destination service, `None` for passthrough
    /// requests (unknown host under ALLOW_ANY).
    pub table: Option<Handle<RouteTable>>,
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
