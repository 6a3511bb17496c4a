//! Istio's Telemetry API as a compiled, per-workload policy.
//!
//! Given every Telemetry resource, the MeshConfig and one workload,
//! [`policy_for`] computes what istiod would configure on that workload's
//! proxy, direction by direction (client = outbound, server = inbound):
//! which standard metrics are on and how their tags change, where spans go
//! and how often, and which access logs are written with which filter. CEL
//! expressions are compiled once here ([`CelExpr`]) and evaluated per request
//! against [`Attributes`].
//!
//! Pure: no I/O, no clock. The serde types and field validation stay in
//! [`crate::config::telemetry`]; emitting metrics, spans and log lines is the
//! SDK's job (mesh-tower's `telemetry/`).

pub mod attributes;
pub mod cel;

pub use attributes::{Attributes, Connection, HeaderLookup, Headers, Peer, Request, Response};
pub use cel::{CelError, CelExpr, UNKNOWN_TAG_VALUE};
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod providers;
pub mod select;
pub mod tracing;

pub use policy::{
    AccessLog, AccessLogPolicy, AccessLogSink, AccessLogSource, Direction, DirectionPolicy,
    LogFormat, MetricPolicy, MetricsPolicy, TagAction, TelemetryPolicy, TracingPolicy,
    TracingProvider,
};
pub use select::{applicable, TelemetryResource, Workload};

use crate::config::telemetry::WorkloadMode;
use crate::config::{MeshConfig, Resource};

/// The effective telemetry of `workload`, given every Telemetry resource and
/// the MeshConfig. With no resources at all this is Istio's default:
/// Prometheus metrics on, tracing and access logs as MeshConfig says.
pub fn policy_for(
    resources: &[TelemetryResource<'_>],
    mesh: &MeshConfig,
    workload: Workload<'_>,
) -> TelemetryPolicy {
    let applied = applicable(resources, mesh.root_namespace(), workload);
    let metrics: Vec<_> = applied.iter().flat_map(|r| &r.spec.metrics).collect();
    let tracing: Vec<_> = applied.iter().flat_map(|r| &r.spec.tracing).collect();
    let logging: Vec<&[_]> = applied
        .iter()
        .map(|r| r.spec.access_logging.as_slice())
        .filter(|l| !l.is_empty())
        .collect();
    let (client_metrics, server_metrics) = metrics::merge(&metrics, mesh);
    let (client_tracing, server_tracing) = tracing::merge(&tracing, mesh);
    TelemetryPolicy {
        sources: applied
            .iter()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect(),
        client: DirectionPolicy {
            metrics: client_metrics,
            tracing: client_tracing,
            access_logs: logging::merge(&logging, mesh, WorkloadMode::Client),
        },
        server: DirectionPolicy {
            metrics: server_metrics,
            tracing: server_tracing,
            access_logs: logging::merge(&logging, mesh, WorkloadMode::Server),
        },
    }
}

/// [`policy_for`] over loaded resources (only the Telemetry ones are read).
pub fn policy_for_resources(
    resources: &[Resource],
    mesh: &MeshConfig,
    workload: Workload<'_>,
) -> TelemetryPolicy {
    policy_for(&TelemetryResource::all(resources), mesh, workload)
}

#[cfg(test)]
mod serde_tests;
#[cfg(test)]
mod tests;
