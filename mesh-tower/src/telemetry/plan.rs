//! What the Telemetry API asks of one direction, reduced to the few
//! switches the request path tests: which standard metrics are on,
//! whether any has tag overrides, whether access logs or tracing are
//! configured. Worked out once per policy and direction (a per-thread
//! cache keyed by the policy's `Arc`), so a request under the default
//! policy only reads a few booleans.

use std::sync::Arc;

use mesh_core::config::telemetry::IstioMetric;
use mesh_core::telemetry::{Direction, TelemetryPolicy};

use super::metrics::Enabled;
use super::Reporter;
use crate::handle::Handle;
use crate::thread_cache::ThreadCache;

/// The switches of one direction's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The standard request metrics recorded.
    pub metrics: Enabled,
    /// Some recorded metric has tag overrides (labels then come from CEL,
    /// per request).
    pub tagged: bool,
    /// Access logs are written.
    pub access: bool,
    /// Spans are made and reported.
    pub tracing: bool,
}

impl Plan {
    /// True when nothing at all is reported.
    pub fn is_off(&self) -> bool {
        !self.metrics.any() && !self.access && !self.tracing
    }

    /// The plan of `policy` for `reporter`'s direction.
    pub fn of(policy: &TelemetryPolicy, reporter: Reporter) -> Plan {
        let d = policy.direction(direction(reporter));
        let on = |m| d.metrics.records(m);
        let metrics = Enabled {
            requests: on(IstioMetric::RequestCount),
            duration: on(IstioMetric::RequestDuration),
            request_bytes: on(IstioMetric::RequestSize),
            response_bytes: on(IstioMetric::ResponseSize),
            request_messages: on(IstioMetric::GrpcRequestMessages),
            response_messages: on(IstioMetric::GrpcResponseMessages),
        };
        let tagged = d.metrics.enabled
            && d.metrics
                .metrics
                .values()
                .any(|m| m.enabled && !m.tags.is_empty());
        Plan {
            metrics,
            tagged,
            access: !d.access_logs.logs.is_empty(),
            tracing: d.tracing.is_active(),
        }
    }

    /// The plan for `policy`, from this thread's cache.
    pub fn cached(policy: &Arc<TelemetryPolicy>, reporter: Reporter) -> Plan {
        thread_local! {
            static PLANS: ThreadCache<(Arc<TelemetryPolicy>, Reporter), Plan> =
                const { ThreadCache::new() };
        }
        if let Some(hit) = PLANS.with(|c| {
            c.find(|(p, r), plan| (Arc::ptr_eq(p, policy) && *r == reporter).then_some(*plan))
        }) {
            return hit;
        }
        let plan = Plan::of(policy, reporter);
        PLANS.with(|c| c.insert((policy.clone(), reporter), plan, |_| true));
        plan
    }
}

/// A handle on `policy` this thread made, for a request that keeps the
/// policy until it ends: cloning it writes a count only this thread uses
/// (see `crate::handle`), where the policy's own count is every thread's.
pub(crate) fn handle(policy: &Arc<TelemetryPolicy>) -> Handle<TelemetryPolicy> {
    thread_local! {
        static HANDLES: ThreadCache<Arc<TelemetryPolicy>, Handle<TelemetryPolicy>> =
            const { ThreadCache::new() };
    }
    if let Some(h) = HANDLES.with(|c| c.find(|k, h| Arc::ptr_eq(k, policy).then(|| h.clone()))) {
        return h;
    }
    let h = Handle::new(policy.clone());
    HANDLES.with(|c| c.insert(policy.clone(), h.clone(), |_| true));
    h
}

/// The policy direction a reporter reads.
pub fn direction(reporter: Reporter) -> Direction {
    match reporter {
        Reporter::Source => Direction::Client,
        Reporter::Destination => Direction::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_records_every_request_metric_and_nothing_else() {
        let labels = Default::default();
        let p = Arc::new(mesh_core::telemetry::policy_for(
            &[],
            &Default::default(),
            mesh_core::telemetry::Workload {
                namespace: "default",
                labels: &labels,
            },
        ));
        let plan = Plan::cached(&p, Reporter::Source);
        assert_eq!(plan.metrics, Enabled::default());
        assert!(!plan.tagged && !plan.access && !plan.tracing);
        assert_eq!(Plan::cached(&p, Reporter::Destination), plan);
    }
}
