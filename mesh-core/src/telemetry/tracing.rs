//! Tracing merging, as istiod's `Telemetries.Tracing` and the listener
//! code that applies it (`pilot/pkg/networking/core/tracing.go`).
//!
//! - No `tracing` in any applicable resource and no
//!   `defaultProviders.tracing`: MeshConfig's legacy settings decide
//!   (`enableTracing`, the tracer of `defaultConfig.tracing`).
//! - Otherwise both directions start from the first default provider; each
//!   `tracing` entry, least specific first, applies to the directions its
//!   `match.mode` names (both when unset). A non-empty `providers` sets the
//!   provider to the first one named; `disableSpanReporting`,
//!   `randomSamplingPercentage`, `useRequestIdForTraceSampling` and
//!   `enableIstioTags` replace when set; `customTags` replace the whole map
//!   (not merged).
//! - No provider found (or one that cannot trace): no tracing.
//! - Sampling: a provider with its own sampler (OpenTelemetry's Dynatrace
//!   sampler) samples 100%; else `randomSamplingPercentage`; else
//!   `defaultConfig.tracing.sampling` when non-zero (above 100 counts as
//!   1); else istiod's `PILOT_TRACE_SAMPLING` default, 1%.

use crate::config::mesh_config::ProviderKind;
use crate::config::telemetry::{Tracing, WorkloadMode};
use crate::config::MeshConfig;

use super::policy::{TracingPolicy, TracingProvider};
use super::providers::fetch;

/// istiod's `PILOT_TRACE_SAMPLING` default, in percent.
pub const DEFAULT_SAMPLING_PERCENTAGE: f64 = 1.0;

/// Keys of `defaultConfig.tracing` that name a tracer.
const LEGACY_TRACERS: [&str; 5] = [
    "zipkin",
    "lightstep",
    "datadog",
    "stackdriver",
    "openCensusAgent",
];

/// `defaultConfig.tracing.sampling` as istiod reads it, else the default.
fn proxy_config_sampling(mesh: &MeshConfig) -> f64 {
    let s = mesh
        .default_config
        .as_ref()
        .and_then(|c| c.tracing.as_ref())
        .and_then(|t| t.get("sampling"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    if s == 0.0 {
        DEFAULT_SAMPLING_PERCENTAGE
    } else if s > 100.0 {
        1.0
    } else {
        s
    }
}

fn off(sampling: f64) -> TracingPolicy {
    TracingPolicy {
        provider: None,
        random_sampling_percentage: sampling,
        custom_tags: Default::default(),
        disable_span_reporting: false,
        use_request_id_for_trace_sampling: true,
        enable_istio_tags: true,
    }
}

fn legacy(mesh: &MeshConfig) -> TracingPolicy {
    let mut p = off(proxy_config_sampling(mesh));
    if !mesh.tracing_enabled() {
        return p;
    }
    let tracer = mesh
        .default_config
        .as_ref()
        .and_then(|c| c.tracing.as_ref())
        .filter(|t| LEGACY_TRACERS.iter().any(|k| t.get(*k).is_some()));
    p.provider = tracer.map(|t| TracingProvider::ProxyConfig(t.clone()));
    p
}

/// A provider istiod can configure a tracer for.
fn tracer(mesh: &MeshConfig, name: &str) -> Option<TracingProvider> {
    let p = fetch(mesh, name)?;
    matches!(
        p.kind()?,
        ProviderKind::Zipkin
            | ProviderKind::Datadog
            | ProviderKind::SkyWalking
            | ProviderKind::OpenTelemetry
    )
    .then(|| TracingProvider::Extension(Box::new(p)))
}

struct Spec {
    provider: Option<TracingProvider>,
    policy: TracingPolicy,
    sampling: Option<f64>,
}

/// The merged tracing of both directions.
pub fn merge(entries: &[&Tracing], mesh: &MeshConfig) -> (TracingPolicy, TracingPolicy) {
    let defaults = mesh.default_providers().tracing;
    if entries.is_empty() && defaults.is_empty() {
        let p = legacy(mesh);
        return (p.clone(), p);
    }
    let start = || Spec {
        provider: defaults.first().and_then(|d| tracer(mesh, d)),
        policy: off(0.0),
        sampling: None,
    };
    let (mut client, mut server) = (start(), start());
    for t in entries {
        let mode = t.match_.map(|m| m.mode).unwrap_or_default();
        let mut specs: Vec<&mut Spec> = Vec::with_capacity(2);
        if mode.covers(WorkloadMode::Client) {
            specs.push(&mut client);
        }
        if mode.covers(WorkloadMode::Server) {
            specs.push(&mut server);
        }
        for s in specs {
            if let Some(first) = t.providers.first() {
                s.provider = tracer(mesh, &first.name);
            }
            if let Some(d) = t.disable_span_reporting {
                s.policy.disable_span_reporting = d;
            }
            if !t.custom_tags.is_empty() {
                s.policy.custom_tags = t.custom_tags.clone();
            }
            if let Some(r) = t.random_sampling_percentage {
                s.sampling = Some(r);
            }
            if let Some(u) = t.use_request_id_for_trace_sampling {
                s.policy.use_request_id_for_trace_sampling = u;
            }
            if let Some(e) = t.enable_istio_tags {
                s.policy.enable_istio_tags = e;
            }
        }
    }
    let finish = |s: Spec| {
        let own_sampler = matches!(
            &s.provider,
            Some(TracingProvider::Extension(p))
                if p.opentelemetry.as_ref().is_some_and(|o| o.dynatrace_sampler.is_some())
        );
        let sampling = if own_sampler {
            100.0
        } else {
            s.sampling.unwrap_or_else(|| proxy_config_sampling(mesh))
        };
        TracingPolicy {
            provider: s.provider,
            random_sampling_percentage: sampling,
            ..s.policy
        }
    };
    (finish(client), finish(server))
}
