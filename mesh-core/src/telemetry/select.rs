//! Which Telemetry resources apply to a workload, in istiod's order
//! (`applicableTelemetries` in `pilot/pkg/model/telemetry.go`):
//!
//! 1. the root namespace's namespace-wide resource (no `selector.matchLabels`
//!    and no `targetRef(s)`),
//! 2. the workload namespace's namespace-wide resource, unless that is the
//!    root namespace,
//! 3. every resource in the workload's namespace whose selector's labels
//!    all sit on the workload (or whose `targetRef(s)` name it), each
//!    appended in turn, so a later one overrides an earlier one field by
//!    field.
//!
//! Several namespace-wide resources in one namespace: istiod sorts by
//! creation time (then name, then namespace) and takes the first, ignoring
//! the rest. Local files carry no creation time, so ties are broken as
//! istiod breaks equal timestamps: by name.
//!
//! `targetRef(s)`: a sidecar workload is named only by a `Gateway` of
//! `gateway.networking.k8s.io` whose name its
//! `gateway.networking.k8s.io/gateway-name` label carries; references to
//! Services need the service a request is for, which this per-workload
//! view does not have, so they do not apply here.

use crate::config::common::{Labels, PolicyTargetReference};
use crate::config::telemetry::Telemetry;
use crate::config::{Kind, Resource};

/// One Telemetry resource with its identity.
#[derive(Debug, Clone, Copy)]
pub struct TelemetryResource<'a> {
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `metadata.name`.
    pub name: &'a str,
    /// The spec.
    pub spec: &'a Telemetry,
}

impl<'a> TelemetryResource<'a> {
    /// The Telemetry resources among `resources`.
    pub fn all(resources: &'a [Resource]) -> Vec<Self> {
        resources
            .iter()
            .filter(|r| r.kind == Kind::Telemetry)
            .filter_map(|r| {
                Some(Self {
                    namespace: &r.meta.namespace,
                    name: &r.meta.name,
                    spec: r.telemetry()?,
                })
            })
            .collect()
    }

    fn targets(&self) -> impl Iterator<Item = &'a PolicyTargetReference> {
        self.spec.target_ref.iter().chain(&self.spec.target_refs)
    }

    fn is_namespace_wide(&self) -> bool {
        let no_labels = self
            .spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty());
        no_labels && self.targets().next().is_none()
    }

    fn selects(&self, labels: &Labels) -> bool {
        if let Some(s) = self
            .spec
            .selector
            .as_ref()
            .filter(|s| !s.match_labels.is_empty())
        {
            return s.matches(labels);
        }
        self.targets().any(|t| {
            t.kind == "Gateway"
                && t.group == "gateway.networking.k8s.io"
                && labels
                    .get("gateway.networking.k8s.io/gateway-name")
                    .is_some_and(|g| *g == t.name)
        })
    }
}

/// The workload a policy is computed for.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a Labels,
}

/// The resources that apply to `workload`, least specific first.
pub fn applicable<'a>(
    resources: &[TelemetryResource<'a>],
    root_namespace: &str,
    workload: Workload<'_>,
) -> Vec<TelemetryResource<'a>> {
    let in_ns = |ns: &str| {
        let mut v: Vec<TelemetryResource<'a>> = resources
            .iter()
            .filter(|r| r.namespace == ns)
            .copied()
            .collect();
        v.sort_by(|a, b| a.name.cmp(b.name));
        v
    };
    let mut out = Vec::new();
    let root = in_ns(root_namespace);
    out.extend(root.iter().find(|r| r.is_namespace_wide()).copied());
    let own = in_ns(workload.namespace);
    if workload.namespace != root_namespace {
        out.extend(own.iter().find(|r| r.is_namespace_wide()).copied());
    }
    out.extend(
        own.iter()
            .filter(|r| !r.is_namespace_wide() && r.selects(workload.labels))
            .copied(),
    );
    out
}
