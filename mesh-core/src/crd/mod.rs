//! Kubernetes CustomResourceDefinitions for the Istio kinds, generated from
//! this crate's own config model (feature `schema`).
//!
//! The spec types in [`crate::config`] derive `schemars::JsonSchema`; this
//! module turns each kind's JSON Schema into a structural
//! `openAPIV3Schema` ([`structural`]) and wraps it in an
//! `apiextensions.k8s.io/v1` CRD with Istio's names, short names,
//! categories, versions and printer columns, so `kubectl get vs` works as
//! with Istio and the API server rejects what meshd would not read. It is
//! not where objects are validated: the schema carries shapes, types,
//! enums and duration syntax; meshd runs the full validation on every
//! object it reads.
//!
//! Plain JSON values, so this sans-IO crate needs no Kubernetes types;
//! `meshctl install` renders them, meshd's tests apply them.

pub mod structural;

#[cfg(test)]
mod tests;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::config::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::config::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::config::telemetry::Telemetry;
use crate::config::Kind;

/// The Istio kinds that have a CRD, in [`Kind::ALL`] order.
pub const KINDS: [Kind; 10] = [
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
];

/// A column `kubectl get` shows beside the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: &'static str,
    /// `string`, `date`, ...
    pub type_: &'static str,
    /// JSONPath into the object (`.spec.host`).
    pub json_path: &'static str,
    /// What the column shows.
    pub description: &'static str,
}

/// How a kind is named in the API: Istio's names, so RBAC rules, `kubectl
/// get vs` and tooling written for Istio keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The kind.
    pub kind: Kind,
    /// Resource name in URLs and RBAC rules (`virtualservices`).
    pub plural: &'static str,
    /// Singular name (`virtualservice`).
    pub singular: &'static str,
    /// `kubectl` short names (`vs`).
    pub short_names: &'static [&'static str],
    /// `kubectl get <category>` groups, `istio-io` first.
    pub categories: &'static [&'static str],
    /// Extra `kubectl get` columns (Age is always added).
    pub printer_columns: &'static [PrinterColumn],
}

impl Names {
    /// The API group (`networking.istio.io`).
    pub fn group(&self) -> &'static str {
        self.kind.group_versions().0
    }

    /// The served versions, storage version first (`v1`).
    pub fn versions(&self) -> &'static [&'static str] {
        self.kind.group_versions().1
    }

    /// The CRD's object name (`virtualservices.networking.istio.io`).
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group())
    }
}

const NETWORKING: &[&str] = &["istio-io", "networking-istio-io"];
const SECURITY: &[&str] = &["istio-io", "security-istio-io"];
const TELEMETRY: &[&str] = &["istio-io", "telemetry-istio-io"];

const fn col(
    name: &'static str,
    json_path: &'static str,
    description: &'static str,
) -> PrinterColumn {
    PrinterColumn {
        name,
        type_: "string",
        json_path,
        description,
    }
}

const VIRTUAL_SERVICE_COLUMNS: &[PrinterColumn] = &[
    col(
        "Gateways",
        ".spec.gateways",
        "The names of gateways and sidecars that should apply these routes",
    ),
    col(
        "Hosts",
        ".spec.hosts",
        "The destination hosts to which traffic is being sent",
    ),
];
const DESTINATION_RULE_COLUMNS: &[PrinterColumn] = &[col(
    "Host",
    ".spec.host",
    "The name of a service from the service registry",
)];
const SERVICE_ENTRY_COLUMNS: &[PrinterColumn] = &[
    col(
        "Hosts",
        ".spec.hosts",
        "The hosts associated with the ServiceEntry",
    ),
    col(
        "Location",
        ".spec.location",
        "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)",
    ),
    col(
        "Resolution",
        ".spec.resolution",
        "Service resolution mode for the hosts (NONE, STATIC, or DNS)",
    ),
];
const WORKLOAD_ENTRY_COLUMNS: &[PrinterColumn] = &[col(
    "Address",
    ".spec.address",
    "Address associated with the network endpoint",
)];
const PEER_AUTHENTICATION_COLUMNS: &[PrinterColumn] = &[col(
    "Mode",
    ".spec.mtls.mode",
    "Defines the mTLS mode used for peer authentication",
)];
const AUTHORIZATION_POLICY_COLUMNS: &[PrinterColumn] =
    &[col("Action", ".spec.action", "The operation to take")];

/// The API names of an Istio kind; `None` for Kubernetes' own kinds.
pub fn names(kind: Kind) -> Option<Names> {
    #[rustfmt::skip]
    let (plural, singular, short_names, categories, printer_columns): (
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static [PrinterColumn],
    ) = match kind {
        Kind::VirtualService => ("virtualservices", "virtualservice", &["vs"], NETWORKING, VIRTUAL_SERVICE_COLUMNS),
        Kind::DestinationRule => ("destinationrules", "destinationrule", &["dr"], NETWORKING, DESTINATION_RULE_COLUMNS),
        Kind::Gateway => ("gateways", "gateway", &["gw"], NETWORKING, &[]),
        Kind::ServiceEntry => ("serviceentries", "serviceentry", &["se"], NETWORKING, SERVICE_ENTRY_COLUMNS),
        Kind::WorkloadEntry => ("workloadentries", "workloadentry", &["we"], NETWORKING, WORKLOAD_ENTRY_COLUMNS),
        Kind::Sidecar => ("sidecars", "sidecar", &[], NETWORKING, &[]),
        Kind::PeerAuthentication => ("peerauthentications", "peerauthentication", &["pa"], SECURITY, PEER_AUTHENTICATION_COLUMNS),
        Kind::RequestAuthentication => ("requestauthentications", "requestauthentication", &["ra"], SECURITY, &[]),
        Kind::AuthorizationPolicy => ("authorizationpolicies", "authorizationpolicy", &["ap"], SECURITY, AUTHORIZATION_POLICY_COLUMNS),
        Kind::Telemetry => ("telemetries", "telemetry", &["telemetry"], TELEMETRY, &[]),
        _ => return None,
    };
    Some(Names {
        kind,
        plural,
        singular,
        short_names,
        categories,
        printer_columns,
    })
}

/// The settings every spec schema is generated with: OpenAPI v3 flavour,
/// every subschema inlined, no meta-schema.
fn generator() -> schemars::SchemaGenerator {
    SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
}

fn schema_of<T: JsonSchema>() -> Value {
    generator().into_root_schema_for::<T>().to_value()
}

/// The JSON Schema schemars derives for a kind's `spec`, before it is made
/// structural; `None` for Kubernetes' own kinds.
pub fn json_schema(kind: Kind) -> Option<Value> {
    Some(match kind {
        Kind::VirtualService => schema_of::<VirtualService>(),
        Kind::DestinationRule => schema_of::<DestinationRule>(),
        Kind::Gateway => schema_of::<Gateway>(),
        Kind::ServiceEntry => schema_of::<ServiceEntry>(),
        Kind::WorkloadEntry => schema_of::<WorkloadEntry>(),
        Kind::Sidecar => schema_of::<Sidecar>(),
        Kind::PeerAuthentication => schema_of::<PeerAuthentication>(),
        Kind::RequestAuthentication => schema_of::<RequestAuthentication>(),
        Kind::AuthorizationPolicy => schema_of::<AuthorizationPolicy>(),
        Kind::Telemetry => schema_of::<Telemetry>(),
        _ => return None,
    })
}

/// The structural schema of a kind's `spec`; `None` for Kubernetes' own
/// kinds.
pub fn spec_schema(kind: Kind) -> Option<Value> {
    json_schema(kind).map(|s| structural::to_structural(&s))
}

/// The whole object's `openAPIV3Schema`: `spec` as generated, `status`
/// open (meshd may write conditions there, as istiod does).
pub fn object_schema(kind: Kind) -> Option<Value> {
    let spec = spec_schema(kind)?;
    Some(json!({
        "type": "object",
        "description": format!(
            "{kind}: Istio's {kind} as meshd reads it; see the spec for its fields."
        ),
        "properties": {
            "spec": spec,
            "status": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
    }))
}

/// The `apiextensions.k8s.io/v1` CustomResourceDefinition of an Istio
/// kind; `None` for Kubernetes' own kinds. Every version is served with
/// the same schema, the first (`v1`) is stored.
pub fn crd(kind: Kind) -> Option<Value> {
    let names = names(kind)?;
    let schema = object_schema(kind)?;
    let mut columns: Vec<Value> = names
        .printer_columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "jsonPath": c.json_path,
                "description": c.description,
            })
        })
        .collect();
    columns.push(json!({
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }));
    let versions: Vec<Value> = names
        .versions()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            })
        })
        .collect();
    let mut api_names = json!({
        "kind": kind.name(),
        "listKind": format!("{kind}List"),
        "plural": names.plural,
        "singular": names.singular,
        "categories": names.categories,
    });
    if !names.short_names.is_empty() {
        api_names["shortNames"] = json!(names.short_names);
    }
    Some(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": names.crd_name()},
        "spec": {
            "group": names.group(),
            "names": api_names,
            "scope": "Namespaced",
            "versions": versions,
        },
    }))
}

/// One CRD per Istio kind, in [`KINDS`] order.
pub fn all() -> Vec<Value> {
    KINDS.iter().filter_map(|k| crd(*k)).collect()
}
