//! The mutating admission webhook (istiod's `/inject`): the API server asks
//! before it stores a new Pod, and meshd answers with a JSONPatch that
//! joins the pod to the mesh, as Istio's sidecar injector does.
//!
//! Who is injected, Istio's rules: the pod's label (or, older, annotation)
//! `sidecar.istio.io/inject: "true"`, or its namespace's label
//! `istio-injection=enabled`; never a pod that says `"false"`, a namespace
//! labelled `istio-injection=disabled`, a `hostNetwork` pod, a pod already
//! injected (`sidecar.istio.io/status`), or one in `kube-system` /
//! `kube-public`.
//!
//! What is added depends on the template (`inject.istio.io/templates`):
//!
//! - `sidecar` (default): `mesh-init` (`mesh-shim iptables`, the capture
//!   rules, as root with NET_ADMIN/NET_RAW) then `mesh-shim` (`mesh-shim
//!   run --capture-inbound` against meshd's TLS port and CA, as UID 1337)
//!   as a native sidecar (an init container with `restartPolicy: Always`),
//!   or as a regular container when [`InjectConfig::native_sidecars`] is
//!   off (clusters before Kubernetes 1.29);
//! - `grpc-agent` (Istio's proxyless gRPC): no capture; `mesh-agent`
//!   (`mesh-shim agent`) writes the gRPC xDS bootstrap and the workload
//!   certificate files, and every app container gets
//!   `GRPC_XDS_BOOTSTRAP` and both directories mounted.
//!
//! Both add the projected ServiceAccount token (audience `istio-ca`) and
//! the `istio-ca-root-cert` ConfigMap as volumes, the
//! `security.istio.io/tlsMode` and canonical service labels, and the
//! `sidecar.istio.io/status` annotation listing what was added.
//!
//! The decision and the mutation are pure functions of the review and an
//! [`InjectConfig`] ([`review`]); the HTTPS server is `super::webhook`.
//!
//! Not here: writing the `istio-ca-root-cert` ConfigMap into namespaces,
//! rewriting app probes through the shim (Istio's `/app-health`), the
//! `includeOutboundPorts` annotation (the shim has no such flag), or
//! revisions and custom templates.

mod template;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use mesh_core::config::common::Labels;
use mesh_core::config::Kind;
use serde_json::Value;

use crate::controller::Controller;

/// The path the API server posts pod reviews to.
pub const INJECT_PATH: &str = "/inject";

/// Pod label (or annotation) that opts a pod in (`"true"`) or out.
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// Namespace label that opts every pod in it in (`enabled`) or out
/// (`disabled`).
pub const NAMESPACE_LABEL: &str = "istio-injection";
/// Pod annotation naming the templates to apply (`sidecar`, `grpc-agent`).
pub const TEMPLATES_ANNOTATION: &str = "inject.istio.io/templates";
/// Pod annotation recording what was injected (JSON).
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

/// Namespaces never injected (Istio's defaults).
const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public"];

/// What the injected containers run and talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// The image holding `mesh-shim` on its `PATH` (for `mesh-init`,
    /// `mesh-shim` and `mesh-agent`).
    pub shim_image: String,
    /// meshd's TLS xDS + CA port as pods reach it, `host:port` (istiod's
    /// `istiod.istio-system.svc:15012`); the host must be a name on
    /// meshd's serving certificate.
    pub meshd_address: String,
    /// Trust domain of the workload identities (for `mesh-shim agent`).
    pub trust_domain: String,
    /// `CLUSTER_ID` in the gRPC bootstrap's node metadata.
    pub cluster_id: String,
    /// Inject the shim as a native sidecar (an init container with
    /// `restartPolicy: Always`, Kubernetes 1.29 and later); off, as a
    /// regular container.
    pub native_sidecars: bool,
    /// The UID the shim runs as, whose traffic is never captured.
    pub proxy_uid: i64,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            shim_image: "mesh-shim:dev".into(),
            meshd_address: "meshd.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            native_sidecars: true,
            proxy_uid: 1337,
        }
    }
}

/// Which template a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// The shim beside the app with transparent capture.
    Sidecar,
    /// Proxyless gRPC: bootstrap and certificate files, no capture.
    GrpcAgent,
}

/// Whether a pod is injected, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Inject with this template.
    Inject(Template),
    /// Leave the pod as it is, for this reason.
    Skip(String),
    /// Refuse the pod (an unknown template was asked for).
    Refuse(String),
}

/// Answers one AdmissionReview (the request body) with one (the response
/// body): pods to inject get a JSONPatch, everything else is allowed
/// unchanged. `namespace_labels` looks up a namespace's labels (the
/// review does not carry them); `None` reads as no labels.
pub fn review(
    body: &[u8],
    config: &InjectConfig,
    namespace_labels: &dyn Fn(&str) -> Option<Labels>,
) -> Vec<u8> {
    let response = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Err(e) => AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")),
        Ok(review) => match TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) {
            Err(_) => AdmissionResponse::invalid("an AdmissionReview without a request"),
            Ok(req) => respond(&req, raw_object(body), config, namespace_labels),
        },
    };
    serde_json::to_vec(&response.into_review()).unwrap_or_default()
}

/// The pod exactly as the API server sent it: the patch is computed
/// against these bytes, not a re-serialized copy.
fn raw_object(body: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    match v.get_mut("request")?.get_mut("object")?.take() {
        Value::Null => None,
        o => Some(o),
    }
}

fn respond(
    req: &AdmissionRequest<DynamicObject>,
    pod: Option<Value>,
    config: &InjectConfig,
    namespace_labels: &dyn Fn(&str) -> Option<Labels>,
) -> AdmissionResponse {
    let allow = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
        return allow;
    }
    let Some(pod) = pod else {
        return allow.deny("the review carries no pod");
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| str_at(&pod, &["metadata", "namespace"]).map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let ns_labels = namespace_labels(&namespace).unwrap_or_default();
    match decide(&pod, &namespace, &ns_labels) {
        Decision::Skip(why) => {
            tracing::debug!(%namespace, pod = %pod_name(&pod), %why, "not injecting");
            allow
        }
        Decision::Refuse(why) => allow.deny(why),
        Decision::Inject(t) => {
            let injected = inject(&pod, &namespace, t, config);
            let patch = json_patch::diff(&pod, &injected);
            tracing::info!(%namespace, pod = %pod_name(&pod), template = ?t, "injecting");
            match allow.clone().with_patch(patch) {
                Ok(r) => r,
                Err(e) => allow.deny(format!("meshd could not write the injection patch: {e}")),
            }
        }
    }
}

/// Whether `pod` in `namespace` (labelled `ns_labels`) is injected, and
/// with which template.
pub fn decide(pod: &Value, namespace: &str, ns_labels: &Labels) -> Decision {
    let skip = |why: &str| Decision::Skip(why.to_string());
    if IGNORED_NAMESPACES.contains(&namespace) {
        return skip("system namespace");
    }
    if pod
        .pointer("/spec/hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return skip("hostNetwork pod");
    }
    if str_at(pod, &["metadata", "annotations", STATUS_ANNOTATION]).is_some() {
        return skip("already injected");
    }
    if ns_labels.get(NAMESPACE_LABEL).map(String::as_str) == Some("disabled") {
        return skip("namespace has istio-injection=disabled");
    }
    // The label wins over the (older) annotation, as in Istio.
    let pod_says = str_at(pod, &["metadata", "labels", INJECT_LABEL])
        .or_else(|| str_at(pod, &["metadata", "annotations", INJECT_LABEL]))
        .map(|v| v.trim().to_ascii_lowercase());
    let wanted = match pod_says.as_deref() {
        Some("true" | "y" | "yes" | "on") => true,
        Some(_) => return skip("the pod opted out"),
        None => ns_labels.get(NAMESPACE_LABEL).map(String::as_str) == Some("enabled"),
    };
    if !wanted {
        return skip("neither the pod nor its namespace asks for injection");
    }
    let templates = str_at(pod, &["metadata", "annotations", TEMPLATES_ANNOTATION]).unwrap_or("");
    let mut template = Template::Sidecar;
    for name in templates
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match name {
            "sidecar" => {}
            "grpc-agent" => template = Template::GrpcAgent,
            other => {
                return Decision::Refuse(format!(
                    "meshd cannot inject template {other:?} ({TEMPLATES_ANNOTATION}); the templates are sidecar and grpc-agent"
                ))
            }
        }
    }
    Decision::Inject(template)
}

/// `pod` with `template` applied: what the patch turns the reviewed pod
/// into.
pub fn inject(pod: &Value, namespace: &str, template: Template, config: &InjectConfig) -> Value {
    template::apply(pod, namespace, template, config)
}

/// The labels of namespace `name` in the config meshd serves (the
/// Kubernetes source watches Namespaces); `None` before the first config
/// or for a namespace meshd has not seen.
pub fn namespace_labels(ctl: &Controller, name: &str) -> Option<Labels> {
    let g = ctl.generation()?;
    g.resources
        .iter()
        .find(|r| r.kind == Kind::Namespace && r.meta.name == name)
        .map(|r| r.meta.labels.clone())
}

/// The string at `path` in `v`.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn pod_name(pod: &Value) -> String {
    str_at(pod, &["metadata", "name"])
        .or_else(|| str_at(pod, &["metadata", "generateName"]))
        .unwrap_or("")
        .to_string()
}

/// The string map at `path` (labels, annotations).
fn string_map(v: &Value, path: &[&str]) -> BTreeMap<String, String> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
