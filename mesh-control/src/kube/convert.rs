//! One API object to one [`Resource`]: the same loader and validation as
//! a YAML file, so an object from the API server and the same YAML on disk
//! mean exactly the same. An object that fails is an [`Entry::Invalid`]
//! with messages naming the object, the field and the fix.

use std::sync::Arc;

use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use mesh_core::config::load::load_value;
use mesh_core::config::Kind;
use serde_json::Value;

use super::store::Entry;

/// The annotation `kubectl apply` leaves: a second copy of the object,
/// never read by the mesh.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The prefix of [`origin`]: what marks a resource as read from the API.
pub const CLUSTER_ORIGIN: &str = "kubernetes:";

/// How an object is named in errors and findings:
/// `kubernetes:Kind/namespace/name` (cluster-scoped objects have no
/// namespace part).
pub fn origin(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("kubernetes:{kind}/{ns}/{name}"),
        None => format!("kubernetes:{kind}/{name}"),
    }
}

/// The store key of an object: (namespace, name); cluster-scoped objects
/// have an empty namespace.
pub fn key(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Converts an object of `kind`, listed through `ar`.
pub fn convert(kind: Kind, ar: &ApiResource, obj: DynamicObject) -> Entry {
    let file = origin(
        kind,
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref().unwrap_or(""),
    );
    let mut value = match serde_json::to_value(&obj) {
        Ok(v) => v,
        Err(e) => return Entry::Invalid(vec![format!("{file}: cannot be read: {e}")]),
    };
    if let Value::Object(map) = &mut value {
        // List items may come without their type; the watch says it.
        map.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        map.insert("kind".into(), Value::String(ar.kind.clone()));
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
            if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                ann.remove(LAST_APPLIED);
            }
        }
    }
    let mut loaded = load_value(value, &file);
    if !loaded.errors.is_empty() {
        return Entry::Invalid(loaded.errors.iter().map(ToString::to_string).collect());
    }
    match loaded.resources.pop() {
        Some(r) => Entry::Valid(Arc::new(r)),
        None => Entry::Invalid(vec![format!("{file}: no resource in the object")]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use kube::core::GroupVersionKind;

    use super::*;

    fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    #[test]
    fn an_api_object_loads_like_its_yaml() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "reviews", "namespace": "bookinfo",
                "resourceVersion": "812", "uid": "u-1", "generation": 2,
                "creationTimestamp": "2026-12-05T08:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {LAST_APPLIED: "{...}"}
            },
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
            "status": {"observedGeneration": 2}
        }))
        .unwrap();
        let ar = ar(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
        );
        let Entry::Valid(r) = convert(Kind::VirtualService, &ar, obj) else {
            panic!("not valid")
        };
        assert_eq!(r.key(), "VirtualService/bookinfo/reviews");
        assert_eq!(r.origin.file, "kubernetes:VirtualService/bookinfo/reviews");
        assert!(r.meta.annotations.is_empty());
    }

    #[test]
    fn an_invalid_object_is_refused_naming_object_and_field() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"hosts": ["reviews"], "http": [{"timeout": "soon", "route": [{"destination": {"host": "reviews"}}]}]}
        }))
        .unwrap();
        let ar = ar(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
        );
        let Entry::Invalid(why) = convert(Kind::VirtualService, &ar, obj) else {
            panic!("accepted")
        };
        assert!(
            why[0].starts_with("kubernetes:VirtualService/bookinfo/reviews:")
                && why[0].contains("spec.http[0].timeout"),
            "{why:?}"
        );
    }
}
