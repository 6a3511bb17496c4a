//! Which AuthorizationPolicies apply to a workload.
//!
//! - A policy in the root namespace applies mesh-wide: to every workload, or
//!   with a `selector` to matching workloads in any namespace.
//! - A policy elsewhere applies only to workloads of its own namespace: all
//!   of them without a selector, matching ones with `selector.matchLabels`.
//! - A policy with `targetRef`/`targetRefs` applies only to workloads that
//!   implement one of the referenced resources (a Gateway's deployment, a
//!   Service's waypoint), declared in [`Workload::targets`]. A plain workload
//!   declares none, so targetRef policies never apply to it. (Istio applies a
//!   Service targetRef only in ambient mode through the waypoint; a sidecar
//!   workload ignores it, which is what an empty `targets` gives.)

use crate::config::common::Labels;
use crate::config::Resource;

use super::engine::PolicySet;
use super::path::Normalization;

/// A resource a workload implements, for `targetRef` binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `Gateway`, `GatewayClass`, `Service` or `ServiceEntry`.
    pub kind: String,
    /// Name of the resource.
    pub name: String,
    /// Namespace of the resource (empty for cluster-scoped GatewayClass).
    pub namespace: String,
}

/// The workload policies are selected for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: Labels,
    /// Resources it implements (empty for an ordinary sidecar workload).
    pub targets: Vec<Target>,
}

impl Workload {
    /// A workload with a namespace and labels.
    pub fn new(namespace: impl Into<String>, labels: Labels) -> Self {
        Self {
            namespace: namespace.into(),
            labels,
            targets: Vec::new(),
        }
    }
}

/// True when the AuthorizationPolicy `resource` applies to `workload`.
/// Resources of other kinds never apply.
pub fn applies_to(resource: &Resource, root_namespace: &str, workload: &Workload) -> bool {
    let Some(policy) = resource.authorization_policy() else {
        return false;
    };
    let ns = resource.meta.namespace.as_str();
    let refs: Vec<_> = policy
        .target_ref
        .iter()
        .chain(policy.target_refs.iter())
        .collect();
    if !refs.is_empty() {
        return refs.iter().any(|t| {
            let t_ns = t.namespace.as_deref().unwrap_or(ns);
            workload.targets.iter().any(|w| {
                w.kind == t.kind
                    && w.name == t.name
                    && (w.namespace == t_ns || t.kind == "GatewayClass")
            })
        });
    }
    if ns != root_namespace && ns != workload.namespace {
        return false;
    }
    policy
        .selector
        .as_ref()
        .is_none_or(|s| s.matches(&workload.labels))
}

/// The AuthorizationPolicies that apply to `workload`, ordered by
/// namespace/name.
pub fn select<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
    root_namespace: &str,
    workload: &Workload,
) -> Vec<&'a Resource> {
    let mut out: Vec<&Resource> = resources
        .into_iter()
        .filter(|r| applies_to(r, root_namespace, workload))
        .collect();
    out.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    out
}

impl PolicySet {
    /// Selects and compiles the policies for one workload.
    pub fn for_workload<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        root_namespace: &str,
        workload: &Workload,
        normalization: Normalization,
    ) -> Self {
        Self::compile(select(resources, root_namespace, workload), normalization)
    }
}
