//! HTTP routing: the compiled route model, the matching engine, the
//! compiler from VirtualServices, and the explanation `meshctl x route`
//! prints.
//!
//! - [`model`]: [`RouteTable`] (ordered [`Route`]s for one `host:port`),
//!   actions, weighted destinations and [`Route::pick`].
//! - [`matcher`]: compiled match blocks and [`RequestInfo`], the request view.
//! - [`compile`]: VirtualService selection and compilation for a client.
//! - [`delegate`]: merging delegate VirtualServices into their root.
//! - [`explain`](mod@explain): the `meshctl x route` answer.
//! - [`unreachable`](mod@unreachable): rules shadowed by earlier ones, for the analyzer.
//! - [`tls`]: SNI routes of a gateway's PASSTHROUGH servers.
//!
//! Semantics are Istio's as Envoy executes them: rules in order, first match
//! wins; fields in one match block ANDed, blocks ORed. Not here: TCP
//! routing, sidecar TLS routing and the registry (ports, subsets), which
//! the model compiler joins.

pub mod compile;
pub mod delegate;
pub mod explain;
pub mod matcher;
pub mod model;
pub mod tls;
pub mod unreachable;

pub use compile::{
    compile_gateway_http_routes, compile_route_table, compile_route_table_in, default_route,
    exported_to, select_virtual_service, virtual_services, VsIndex, VsRef,
};
pub use explain::{explain, ExplainRequest, ExplainedDestination, RouteExplanation};
pub use matcher::{HeaderSource, MatchBlock, RequestInfo, StrMatcher, StringMatcher};
pub use model::{Action, Destination, Route, RouteTable, WeightedDestinations};
pub use unreachable::unreachable_rules;

#[cfg(test)]
mod tests;
