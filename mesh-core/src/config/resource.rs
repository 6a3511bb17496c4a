//! The envelope around every loaded resource: kind, API version, metadata,
//! the typed spec and where it came from (file, document, line), so any
//! later finding can point back at the YAML a person wrote.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::common::Labels;
use super::kube::{ControllerSpec, EndpointSlice, NamespaceSpec, NodeSpec, Pod, ServiceSpec};
use super::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use super::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use super::telemetry::Telemetry;
use super::validate::{FieldError, Issues, Validate};
use super::yaml::LineIndex;

/// Every kind the loader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// networking.istio.io VirtualService.
    VirtualService,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// networking.istio.io Gateway.
    Gateway,
    /// networking.istio.io ServiceEntry.
    ServiceEntry,
    /// networking.istio.io WorkloadEntry.
    WorkloadEntry,
    /// networking.istio.io Sidecar.
    Sidecar,
    /// security.istio.io PeerAuthentication.
    PeerAuthentication,
    /// security.istio.io RequestAuthentication.
    RequestAuthentication,
    /// security.istio.io AuthorizationPolicy.
    AuthorizationPolicy,
    /// telemetry.istio.io Telemetry.
    Telemetry,
    /// Kubernetes core Service.
    Service,
    /// Kubernetes core Pod.
    Pod,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// batch/v1 Job.
    Job,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// Kubernetes core Node.
    Node,
    /// Kubernetes core Namespace.
    Namespace,
}

/// How an `apiVersion` relates to the kind's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersionStatus {
    /// The newest stable version.
    Current,
    /// Still accepted, but a newer version exists (v1alpha3/v1beta1 where v1 exists).
    Deprecated,
}

impl Kind {
    /// All kinds, in a stable order.
    pub const ALL: [Kind; 20] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::Service,
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::Job,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::Namespace,
    ];

    /// The kind's name as written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
        }
    }

    /// The API group and the versions accepted for it, newest first.
    pub fn group_versions(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar => ("networking.istio.io", &["v1", "v1beta1", "v1alpha3"]),
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                ("security.istio.io", &["v1", "v1beta1"])
            }
            Kind::Telemetry => ("telemetry.istio.io", &["v1", "v1alpha1"]),
            Kind::Service | Kind::Pod | Kind::Node | Kind::Namespace => ("", &["v1"]),
            Kind::EndpointSlice => ("discovery.k8s.io", &["v1"]),
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => {
                ("apps", &["v1"])
            }
            Kind::Job => ("batch", &["v1"]),
        }
    }

    /// True for Kubernetes' own kinds (core, apps, batch, discovery), whose
    /// unknown fields are accepted and ignored; false for Istio's kinds.
    pub fn is_kubernetes(self) -> bool {
        matches!(
            self,
            Kind::Service
                | Kind::Pod
                | Kind::Deployment
                | Kind::StatefulSet
                | Kind::DaemonSet
                | Kind::ReplicaSet
                | Kind::Job
                | Kind::EndpointSlice
                | Kind::Node
                | Kind::Namespace
        )
    }

    /// The `apiVersion` to write for the current version (`networking.istio.io/v1`).
    pub fn current_api_version(self) -> String {
        let (group, versions) = self.group_versions();
        if group.is_empty() {
            versions[0].to_string()
        } else {
            format!("{group}/{}", versions[0])
        }
    }

    /// Resolves `kind:` and `apiVersion:` to a kind, or says what is accepted.
    pub fn resolve(api_version: &str, kind: &str) -> Result<(Kind, ApiVersionStatus), String> {
        let Some(k) = Kind::ALL.iter().copied().find(|k| k.name() == kind) else {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            return Err(format!(
                "unknown kind {kind:?}; supported kinds are {} (and List)",
                known.join(", ")
            ));
        };
        let (group, versions) = k.group_versions();
        let (g, v) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if g != group || !versions.contains(&v) {
            let accepted: Vec<String> = versions
                .iter()
                .map(|v| {
                    if group.is_empty() {
                        v.to_string()
                    } else {
                        format!("{group}/{v}")
                    }
                })
                .collect();
            return Err(format!(
                "apiVersion {api_version:?} is not valid for kind {kind}; use {}",
                accepted.join(" or ")
            ));
        }
        let status = if v == versions[0] {
            ApiVersionStatus::Current
        } else {
            ApiVersionStatus::Deprecated
        };
        Ok((k, status))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The parts of Kubernetes object metadata the mesh uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, `default` when the file leaves it out (as
    /// `istioctl analyze` does for local files).
    pub namespace: String,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: Labels,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: Labels,
}

/// Where a resource was read from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The file as given by the user (or a label such as `<inline>`).
    pub file: String,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the resource starts.
    pub line: usize,
    /// Path prefix of this resource inside its document (`items[3].` inside
    /// a `kind: List`, empty otherwise).
    pub prefix: String,
    /// Field path to line lookup for the document.
    pub lines: Arc<LineIndex>,
}

impl Origin {
    /// The line of the field at `path` (relative to the resource, such as
    /// `spec.http[0].timeout`), or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> usize {
        self.lines
            .line_of(&format!("{}{path}", self.prefix))
            .unwrap_or(self.line)
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.document == other.document && self.line == other.line
    }
}

/// The typed spec of a resource.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    /// VirtualService.
    VirtualService(VirtualService),
    /// DestinationRule.
    DestinationRule(DestinationRule),
    /// Gateway.
    Gateway(Gateway),
    /// ServiceEntry.
    ServiceEntry(ServiceEntry),
    /// WorkloadEntry.
    WorkloadEntry(WorkloadEntry),
    /// Sidecar.
    Sidecar(Sidecar),
    /// PeerAuthentication.
    PeerAuthentication(PeerAuthentication),
    /// RequestAuthentication.
    RequestAuthentication(RequestAuthentication),
    /// AuthorizationPolicy.
    AuthorizationPolicy(AuthorizationPolicy),
    /// Telemetry.
    Telemetry(Telemetry),
    /// Kubernetes Service.
    Service(ServiceSpec),
    /// Kubernetes Pod.
    Pod(Pod),
    /// Deployment, StatefulSet, DaemonSet, ReplicaSet or Job: a pod template.
    Controller(ControllerSpec),
    /// EndpointSlice (its fields are top-level; paths have no `spec.`).
    EndpointSlice(EndpointSlice),
    /// Node.
    Node(NodeSpec),
    /// Namespace.
    Namespace(NamespaceSpec),
}

impl Validate for Spec {
    fn validate(&self, path: &str, issues: &mut Issues) {
        match self {
            Spec::VirtualService(s) => s.validate(path, issues),
            Spec::DestinationRule(s) => s.validate(path, issues),
            Spec::Gateway(s) => s.validate(path, issues),
            Spec::ServiceEntry(s) => s.validate(path, issues),
            Spec::WorkloadEntry(s) => s.validate(path, issues),
            Spec::Sidecar(s) => s.validate(path, issues),
            Spec::PeerAuthentication(s) => s.validate(path, issues),
            Spec::RequestAuthentication(s) => s.validate(path, issues),
            Spec::AuthorizationPolicy(s) => s.validate(path, issues),
            Spec::Telemetry(s) => s.validate(path, issues),
            Spec::Service(s) => s.validate(path, issues),
            Spec::Pod(s) => s.validate(path, issues),
            Spec::Controller(s) => s.validate(path, issues),
            Spec::EndpointSlice(s) => s.validate("", issues),
            Spec::Node(s) => s.validate(path, issues),
            Spec::Namespace(s) => s.validate(path, issues),
        }
    }
}

/// One loaded resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The `apiVersion` as written.
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Name, namespace, labels, annotations.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: Spec,
    /// Where it was read from.
    pub origin: Origin,
}

impl Resource {
    /// `Kind/namespace/name`, the form findings and errors use.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.meta.namespace, self.meta.name)
    }

    /// `namespace/name`.
    pub fn ns_name(&self) -> String {
        format!("{}/{}", self.meta.namespace, self.meta.name)
    }

    /// Runs the kind's validation; paths start at `spec`.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut issues = Issues::new();
        self.spec.validate("spec", &mut issues);
        issues.into_errors()
    }
}

/// Accessors that return the spec when the resource is of that kind.
macro_rules! spec_accessors {
    ($($fn_name:ident => $variant:ident($ty:ty)),* $(,)?) => {
        impl Resource {
            $(
                #[doc = concat!("The spec, when this is a ", stringify!($variant), ".")]
                pub fn $fn_name(&self) -> Option<&$ty> {
                    match &self.spec {
                        Spec::$variant(s) => Some(s),
                        _ => None,
                    }
                }
            )*
        }
    };
}

spec_accessors! {
    virtual_service => VirtualService(VirtualService),
    destination_rule => DestinationRule(DestinationRule),
    gateway => Gateway(Gateway),
    service_entry => ServiceEntry(ServiceEntry),
    workload_entry => WorkloadEntry(WorkloadEntry),
    sidecar => Sidecar(Sidecar),
    peer_authentication => PeerAuthentication(PeerAuthentication),
    request_authentication => RequestAuthentication(RequestAuthentication),
    authorization_policy => AuthorizationPolicy(AuthorizationPolicy),
    telemetry => Telemetry(Telemetry),
    service => Service(ServiceSpec),
    pod => Pod(Pod),
    controller => Controller(ControllerSpec),
    endpoint_slice => EndpointSlice(EndpointSlice),
}
