//! Helpers shared by the workspace's tests, and nothing else: a
//! dev-only crate (`publish = false`), only ever a `[dev-dependencies]`
//! entry. It holds what several test files would otherwise copy: loopback
//! backends, YAML configs (WorkloadEntries, bookinfo), the scripted ADS
//! client and the test control planes it talks to, and waits for events
//! that replace sleeps.
//!
//! Not a test itself (no `#[test]` here), and not a place for
//! assertions about behaviour: helpers panic only when the setup itself
//! fails, saying which step.
//!
//! The modules that need mesh-tower (backends, the endpoint stage, the
//! inbound server, identities, TLS) are behind the `tower` feature, so
//! mesh-xds's tests build without the SDK. The OTLP trace receiver
//! ([`otlp`]) is behind the `otlp` feature, Debian's Prometheus and
//! promtool ([`prometheus`]) behind `prometheus`, a real kube-apiserver
//! and etcd with a private network namespace for workload addresses
//! ([`kube`]) behind `kube`.

// Test setup: a step that fails is a failed test, said by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod ads;
pub mod bookinfo;
pub mod configs;
pub mod seed;
pub mod wait;
pub mod xds_client;

#[cfg(feature = "tower")]
pub mod backends;
#[cfg(feature = "tower")]
pub mod endpoints;
#[cfg(feature = "tower")]
pub mod identity;
#[cfg(feature = "tower")]
pub mod inbound;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "tower")]
pub mod raw_http;
#[cfg(feature = "tower")]
pub mod sdk;
#[cfg(feature = "tower")]
pub mod telemetry;
#[cfg(feature = "tower")]
pub mod tls;
