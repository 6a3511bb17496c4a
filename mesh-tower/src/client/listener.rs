//! Routing by a gateway listener's route configuration instead of by the
//! destination service.
//!
//! A mesh client routes a request by the service its authority names. A
//! gateway routes by the listener it accepted the request on: the route
//! configuration of that port (or of the HTTPS server the SNI chose) and,
//! in it, the virtual host the `Host` names. The gateway's listener puts
//! [`ListenerRoutes`] on the request; the route layer then looks the
//! virtual host up there (404 NR when none matches, as Envoy answers),
//! and everything after the match (splits, retries, timeouts, faults,
//! mirrors, balancing) is the same stack as for any client.

use std::sync::Arc;

/// The route configuration a request is routed by (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRoutes {
    /// Name of the route configuration in the model's gateway routes
    /// (`http.8080`, `https.443.https.bookinfo-gateway.default`).
    pub name: Arc<str>,
    /// The port the Gateway names for the listener (what `match.port`
    /// compares with, not the socket's port).
    pub port: u16,
}
