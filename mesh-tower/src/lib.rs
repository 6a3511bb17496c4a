//! The SDK a service adds: Tower layers that execute the compiled model from
//! `mesh-core` on the client side (routing, splitting, retries, timeouts,
//! load balancing, outlier detection) and the server side (mTLS, JWT,
//! authorization, rate limits, telemetry).
//!
//! Not yet built: the traffic and security issues fill this crate.
