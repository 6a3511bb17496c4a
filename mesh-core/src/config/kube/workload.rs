//! Kubernetes workloads: `PodSpec` and the pod template of the controller
//! kinds, with the helpers the analyzer needs (effective run-as UIDs,
//! service account, template labels, named container ports).
//!
//! As for all Kubernetes kinds here, unknown fields are accepted and ignored
//! (see the parent module).

use serde::{Deserialize, Serialize};

use crate::config::common::{selector_matches, Labels};
use crate::config::validate::{check_port, field, Issues, Validate};

use super::IpProtocol;

/// The name of the sidecar container Istio injects; it legitimately runs
/// as UID 1337.
pub const SIDECAR_CONTAINER: &str = "istio-proxy";

/// A Kubernetes `Pod`: its spec and, when the object came from a cluster
/// (or a file that carries it), its status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pod {
    /// `spec`.
    #[serde(default)]
    pub spec: PodSpec,
    /// `status`.
    #[serde(default)]
    pub status: super::PodStatus,
}

impl Validate for Pod {
    fn validate(&self, path: &str, issues: &mut Issues) {
        self.spec.validate(path, issues);
    }
}

/// A Kubernetes `PodSpec` (the parts the mesh uses).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The pod's service account; `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still honoured by Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Pod-level security settings, inherited by every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// The application containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// Containers run to completion before the application containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// The pod uses the node's network namespace (no traffic capture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// The Node the pod was scheduled to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// Kubernetes `PodSecurityContext` (the parts the mesh uses).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// UID for every container's entrypoint, unless a container overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// GID for every container's entrypoint, unless a container overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// Require a non-root user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Supplementary group for volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
}

/// Kubernetes container `SecurityContext` (the parts the mesh uses).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// UID of the entrypoint; overrides the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// GID of the entrypoint; overrides the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// Require a non-root user; overrides the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Run privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// One container (the parts the mesh uses).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name, unique in the pod.
    #[serde(default)]
    pub name: String,
    /// Image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Ports the container declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Security settings overriding the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// One declared container port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The port number in the pod.
    #[serde(default)]
    pub container_port: u32,
    /// Name a Service `targetPort` can refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// IP protocol; TCP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IpProtocol>,
}

/// Where a container's effective UID comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UidSource {
    /// The container's own `securityContext.runAsUser`.
    Container,
    /// Inherited from the pod's `securityContext.runAsUser`.
    Pod,
    /// Neither sets it: the image's user applies (unknown here).
    Image,
}

/// The UID one container runs as, after the container's security context
/// overrides the pod's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveUid<'a> {
    /// The container's name.
    pub container: &'a str,
    /// True for an init container.
    pub init: bool,
    /// The UID, `None` when only the image decides.
    pub uid: Option<i64>,
    /// Which setting decided.
    pub source: UidSource,
    /// Path of the deciding field relative to the pod spec (e.g.
    /// `containers[1].securityContext.runAsUser` or
    /// `securityContext.runAsUser`); prefix it with the pod spec's own path
    /// ([`PodSpec::PATH_IN_POD`] or [`ControllerSpec::POD_SPEC_PATH`]).
    pub path: String,
}

impl PodSpec {
    /// Where the pod spec sits in a `Pod` resource.
    pub const PATH_IN_POD: &'static str = "spec";

    /// The service account the pod runs as: `serviceAccountName`, then the
    /// deprecated `serviceAccount`, then `default`.
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.service_account.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or("default")
    }

    /// The effective UID of every container and init container, in order
    /// (containers first). A container's `securityContext.runAsUser`
    /// overrides the pod's.
    pub fn effective_run_as_uids(&self) -> Vec<EffectiveUid<'_>> {
        let pod_uid = self.security_context.as_ref().and_then(|s| s.run_as_user);
        let lists = [
            ("containers", false, &self.containers),
            ("initContainers", true, &self.init_containers),
        ];
        let mut out = Vec::new();
        for (list, init, containers) in lists {
            for (i, c) in containers.iter().enumerate() {
                let own = c.security_context.as_ref().and_then(|s| s.run_as_user);
                let (uid, source, path) = match (own, pod_uid) {
                    (Some(u), _) => (
                        Some(u),
                        UidSource::Container,
                        format!("{list}[{i}].securityContext.runAsUser"),
                    ),
                    (None, Some(u)) => (
                        Some(u),
                        UidSource::Pod,
                        "securityContext.runAsUser".to_string(),
                    ),
                    (None, None) => (None, UidSource::Image, format!("{list}[{i}]")),
                };
                out.push(EffectiveUid {
                    container: &c.name,
                    init,
                    uid,
                    source,
                    path,
                });
            }
        }
        out
    }

    /// [`PodSpec::effective_run_as_uids`] as `(container, path, uid)`
    /// tuples, the path relative to the pod spec.
    pub fn effective_run_as_users(&self) -> Vec<(&str, String, Option<i64>)> {
        self.effective_run_as_uids()
            .into_iter()
            .map(|e| (e.container, e.path, e.uid))
            .collect()
    }

    /// The application containers (not the injected `istio-proxy`) whose
    /// effective UID is `uid`, plus the pod-level setting itself when it is
    /// `uid` even if every container overrides it. Used to flag UID 1337,
    /// whose traffic the sidecar's capture rules let bypass the mesh.
    pub fn containers_running_as(&self, uid: i64) -> Vec<EffectiveUid<'_>> {
        let mut out: Vec<EffectiveUid<'_>> = self
            .effective_run_as_uids()
            .into_iter()
            .filter(|e| e.uid == Some(uid) && e.container != SIDECAR_CONTAINER)
            .collect();
        let pod_uid = self.security_context.as_ref().and_then(|s| s.run_as_user);
        if pod_uid == Some(uid) && !out.iter().any(|e| e.source == UidSource::Pod) {
            out.push(EffectiveUid {
                container: "",
                init: false,
                uid: pod_uid,
                source: UidSource::Pod,
                path: "securityContext.runAsUser".to_string(),
            });
        }
        out
    }

    /// The number of the container port named `name`, across all
    /// containers (what a Service `targetPort: <name>` resolves to).
    pub fn port_by_name(&self, name: &str) -> Option<u32> {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    }

    /// True when the pod uses the node's network (the mesh cannot capture
    /// its traffic).
    pub fn uses_host_network(&self) -> bool {
        self.host_network.unwrap_or(false)
    }
}

impl Validate for PodSpec {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(u) = self.security_context.as_ref().and_then(|s| s.run_as_user) {
            check_uid(
                u,
                &field(&field(path, "securityContext"), "runAsUser"),
                issues,
            );
        }
        for (list, containers) in [
            ("containers", &self.containers),
            ("initContainers", &self.init_containers),
        ] {
            for (i, c) in containers.iter().enumerate() {
                c.validate(&format!("{}[{i}]", field(path, list)), issues);
            }
        }
    }
}

impl Validate for Container {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.name.is_empty() {
            issues.push(field(path, "name"), "container name is required");
        }
        for (i, p) in self.ports.iter().enumerate() {
            check_port(
                p.container_port,
                &format!("{}[{i}].containerPort", field(path, "ports")),
                issues,
            );
        }
        if let Some(u) = self.security_context.as_ref().and_then(|s| s.run_as_user) {
            check_uid(
                u,
                &field(&field(path, "securityContext"), "runAsUser"),
                issues,
            );
        }
    }
}

fn check_uid(uid: i64, path: &str, issues: &mut Issues) {
    if !(0..=i64::from(u32::MAX)).contains(&uid) {
        issues.push(
            path,
            format!("runAsUser {uid} is out of range; expected 0 to 4294967295"),
        );
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    /// Set-based requirements, kept as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<serde_json::Value>,
}

/// The metadata of a pod template.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMeta {
    /// Labels every pod gets.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Annotations every pod gets (e.g. `sidecar.istio.io/inject`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
}

/// A pod template: metadata and a pod spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Labels and annotations of the pods.
    #[serde(default)]
    pub metadata: TemplateMeta,
    /// The pods' spec.
    #[serde(default)]
    pub spec: PodSpec,
}

/// The `spec` of a Deployment, StatefulSet, DaemonSet, ReplicaSet or Job:
/// the parts they share (a selector and a pod template).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Which pods the controller owns (optional for Jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The pods it creates.
    #[serde(default)]
    pub template: PodTemplateSpec,
}

impl ControllerSpec {
    /// Where the pod spec sits in a controller resource.
    pub const POD_SPEC_PATH: &'static str = "spec.template.spec";

    /// The labels of the pods this controller creates.
    pub fn template_labels(&self) -> &Labels {
        &self.template.metadata.labels
    }

    /// The annotations of the pods this controller creates.
    pub fn template_annotations(&self) -> &Labels {
        &self.template.metadata.annotations
    }

    /// The pod spec of the template.
    pub fn pod_spec(&self) -> &PodSpec {
        &self.template.spec
    }

    /// The service account of the pods (`default` when unset).
    pub fn service_account(&self) -> &str {
        self.template.spec.service_account()
    }
}

impl Validate for ControllerSpec {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(sel) = &self.selector {
            let labels = self.template_labels();
            let selected = selector_matches(&sel.match_labels, labels);
            if !selected {
                issues.push(
                    field(&field(path, "selector"), "matchLabels"),
                    "selector.matchLabels does not match template.metadata.labels; the controller would not own its own pods. Make the template carry every selector label",
                );
            }
        }
        self.template
            .spec
            .validate(&field(&field(path, "template"), "spec"), issues);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn paths<T: Validate>(t: &T) -> Vec<String> {
        let mut issues = Issues::new();
        t.validate("spec", &mut issues);
        issues.errors().iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn service_account_defaults() {
        assert_eq!(pod(json!({})).service_account(), "default");
        assert_eq!(
            pod(json!({"serviceAccount": "old"})).service_account(),
            "old"
        );
        assert_eq!(
            pod(json!({"serviceAccount": "old", "serviceAccountName": "new"})).service_account(),
            "new"
        );
        assert_eq!(
            pod(json!({"serviceAccountName": ""})).service_account(),
            "default"
        );
    }

    #[test]
    fn effective_uids_container_overrides_pod() {
        let p = pod(json!({
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": true, "fsGroup": 2000},
            "containers": [
                {"name": "app", "image": "app:1", "resources": {"limits": {"cpu": "1"}}},
                {"name": "side", "securityContext": {"runAsUser": 1337, "allowPrivilegeEscalation": false}},
                {"name": "istio-proxy", "securityContext": {"runAsUser": 1337}}
            ],
            "initContainers": [{"name": "init", "securityContext": {"runAsUser": 0}}],
            "volumes": [{"name": "x", "emptyDir": {}}]
        }));
        let uids = p.effective_run_as_uids();
        assert_eq!(uids.len(), 4);
        assert_eq!(
            (uids[0].container, uids[0].uid, uids[0].source),
            ("app", Some(1000), UidSource::Pod)
        );
        assert_eq!(uids[0].path, "securityContext.runAsUser");
        assert_eq!(
            (uids[1].uid, uids[1].source),
            (Some(1337), UidSource::Container)
        );
        assert_eq!(uids[1].path, "containers[1].securityContext.runAsUser");
        assert!(uids[3].init);
        assert_eq!(uids[3].path, "initContainers[0].securityContext.runAsUser");
        let tuples = p.effective_run_as_users();
        assert_eq!(
            tuples[1],
            (
                "side",
                "containers[1].securityContext.runAsUser".to_string(),
                Some(1337)
            )
        );
        let bad = p.containers_running_as(1337);
        assert_eq!(bad.len(), 1, "istio-proxy is exempt");
        assert_eq!(bad[0].container, "side");
        assert!(paths(&p).is_empty());
    }

    #[test]
    fn pod_level_1337_is_reported_once() {
        let p = pod(json!({
            "securityContext": {"runAsUser": 1337},
            "containers": [{"name": "a"}, {"name": "b"}]
        }));
        let bad = p.containers_running_as(1337);
        assert_eq!(bad.len(), 2);
        assert!(bad.iter().all(|e| e.source == UidSource::Pod));
        // Every container overrides it: the pod-level setting is still reported.
        let p = pod(json!({
            "securityContext": {"runAsUser": 1337},
            "containers": [{"name": "a", "securityContext": {"runAsUser": 1000}}]
        }));
        let bad = p.containers_running_as(1337);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].path, "securityContext.runAsUser");
        let none = pod(json!({"containers": [{"name": "a"}]}));
        assert!(none.containers_running_as(1337).is_empty());
        assert_eq!(none.effective_run_as_uids()[0].source, UidSource::Image);
    }

    #[test]
    fn named_ports_and_host_network() {
        let p = pod(json!({
            "hostNetwork": true,
            "containers": [{"name": "a", "ports": [{"containerPort": 9080, "name": "http", "protocol": "TCP"}]}]
        }));
        assert_eq!(p.port_by_name("http"), Some(9080));
        assert_eq!(p.port_by_name("grpc"), None);
        assert!(p.uses_host_network());
    }

    #[test]
    fn pod_validation() {
        let p = pod(json!({
            "securityContext": {"runAsUser": -1},
            "containers": [{"name": "", "ports": [{"containerPort": 0}]}],
            "initContainers": [{"name": "i", "securityContext": {"runAsUser": 5000000000i64}}]
        }));
        assert_eq!(
            paths(&p),
            vec![
                "spec.securityContext.runAsUser",
                "spec.containers[0].name",
                "spec.containers[0].ports[0].containerPort",
                "spec.initContainers[0].securityContext.runAsUser",
            ]
        );
    }

    #[test]
    fn deployment_spec() {
        let d: ControllerSpec = serde_json::from_value(json!({
            "replicas": 3,
            "strategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
            "template": {
                "metadata": {
                    "labels": {"app": "reviews", "version": "v1"},
                    "annotations": {"sidecar.istio.io/inject": "true"}
                },
                "spec": {
                    "serviceAccountName": "bookinfo-reviews",
                    "containers": [{"name": "reviews", "image": "reviews:v1", "ports": [{"containerPort": 9080}]}]
                }
            }
        }))
        .unwrap();
        assert_eq!(
            d.template_labels().get("version").map(String::as_str),
            Some("v1")
        );
        assert_eq!(d.template_annotations().len(), 1);
        assert_eq!(d.service_account(), "bookinfo-reviews");
        assert_eq!(d.pod_spec().containers.len(), 1);
        assert!(paths(&d).is_empty());
        let back: ControllerSpec =
            serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn job_without_selector_and_mismatched_selector() {
        let job: ControllerSpec = serde_json::from_value(json!({
            "backoffLimit": 4,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi"}]}}
        }))
        .unwrap();
        assert!(paths(&job).is_empty());
        let bad: ControllerSpec = serde_json::from_value(json!({
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}
        }))
        .unwrap();
        assert_eq!(paths(&bad), vec!["spec.selector.matchLabels"]);
    }
}
