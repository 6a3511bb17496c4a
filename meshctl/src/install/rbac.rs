//! What meshd may do in the cluster, and nothing more.
//!
//! Cluster-wide (ClusterRole `meshd`): read the Istio kinds and the
//! Kubernetes kinds meshd watches (`mesh_control::kube`'s list), write the
//! Istio kinds' `status`, review service-account tokens for the CA, and
//! publish `istio-ca-root-cert` ConfigMaps in every namespace. In its own
//! namespace only (Role `meshd`): its leader-election Lease and the CA's
//! Secret. No list or watch on Secrets or ConfigMaps, no delete anywhere,
//! no webhook configurations (meshd patches no caBundle).

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use mesh_core::crd;

use super::{meta, InstallOptions, NAME};

/// Verbs to read and follow a kind.
pub const READ: [&str; 3] = ["get", "list", "watch"];
/// Verbs on a `status` subresource.
pub const WRITE_STATUS: [&str; 2] = ["update", "patch"];
/// Verbs on the few objects meshd owns (Lease, CA Secret).
pub const OWN: [&str; 3] = ["get", "create", "update"];
/// Verbs on the `istio-ca-root-cert` ConfigMaps, which meshd writes by
/// server-side apply (a `patch` that creates when absent).
pub const PUBLISH: [&str; 4] = ["get", "create", "update", "patch"];

fn rule(group: &str, resources: &[String], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.to_vec()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The Istio API groups, each with its kinds' plural names, in
/// [`crd::KINDS`] order.
fn istio_groups() -> Vec<(&'static str, Vec<String>)> {
    let mut groups: Vec<(&'static str, Vec<String>)> = Vec::new();
    for names in crd::KINDS.iter().filter_map(|k| crd::names(*k)) {
        match groups.iter_mut().find(|(g, _)| *g == names.group()) {
            Some((_, plurals)) => plurals.push(names.plural.to_string()),
            None => groups.push((names.group(), vec![names.plural.to_string()])),
        }
    }
    groups
}

/// The cluster-wide rules (see the module docs for why each is there).
pub fn cluster_rules() -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    for (group, plurals) in istio_groups() {
        rules.push(rule(group, &plurals, &READ));
        let status: Vec<String> = plurals.iter().map(|p| format!("{p}/status")).collect();
        rules.push(rule(group, &status, &WRITE_STATUS));
    }
    // The Kubernetes kinds meshd's registry is built from.
    rules.push(rule(
        "",
        &strings(&["services", "pods", "nodes", "namespaces"]),
        &READ,
    ));
    rules.push(rule(
        "discovery.k8s.io",
        &strings(&["endpointslices"]),
        &READ,
    ));
    // The CA authenticates CSRs carrying a Kubernetes service-account token.
    rules.push(rule(
        "authentication.k8s.io",
        &strings(&["tokenreviews"]),
        &["create"],
    ));
    // `istio-ca-root-cert` in every namespace, for workloads to trust meshd.
    rules.push(rule("", &strings(&["configmaps"]), &PUBLISH));
    rules
}

/// The rules in meshd's own namespace: leader election and the CA Secret.
pub fn namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule("coordination.k8s.io", &strings(&["leases"]), &OWN),
        rule("", &strings(&["secrets"]), &OWN),
    ]
}

fn subject(opts: &InstallOptions) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(opts.namespace.clone()),
        api_group: None,
    }]
}

/// ClusterRole `meshd`.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(cluster_rules()),
        aggregation_rule: None,
    }
}

/// ClusterRoleBinding `meshd`: the ClusterRole to meshd's ServiceAccount.
pub fn cluster_role_binding(opts: &InstallOptions) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(subject(opts)),
    }
}

/// Role `meshd` in meshd's namespace.
pub fn role(opts: &InstallOptions) -> Role {
    Role {
        metadata: meta(NAME, Some(&opts.namespace)),
        rules: Some(namespace_rules()),
    }
}

/// RoleBinding `meshd`: the Role to meshd's ServiceAccount.
pub fn role_binding(opts: &InstallOptions) -> RoleBinding {
    RoleBinding {
        metadata: meta(NAME, Some(&opts.namespace)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: NAME.into(),
        },
        subjects: Some(subject(opts)),
    }
}
