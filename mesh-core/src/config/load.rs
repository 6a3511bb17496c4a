//! Loading resources from files, directories and strings.
//!
//! Accepts what Istio users keep in git: multi-document YAML, `kind: List`,
//! JSON, directories walked recursively. Every problem becomes a
//! [`ConfigError`] naming the file, line, document, resource and field, and
//! saying what is expected; a resource with any error is left out of the
//! result so that callers never act on half-understood config.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::Labels;
use super::kube::Pod;
use super::resource::{ApiVersionStatus, Kind, ObjectMeta, Origin, Resource, Spec};
use super::yaml::{parse_documents, LineIndex};

/// One problem found while loading or validating configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based YAML document within the file, when known.
    pub document: Option<usize>,
    /// `Kind/namespace/name`, when the resource got that far.
    pub resource: Option<String>,
    /// Field path such as `spec.http[0].timeout`, when the problem is in a field.
    pub field: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(":")?;
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The outcome of loading: the resources that are valid and every error.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Valid resources in load order.
    pub resources: Vec<Resource>,
    /// Every problem found; resources with a problem are not in `resources`.
    pub errors: Vec<ConfigError>,
    /// Resources written with an `apiVersion` older than the current one,
    /// as (resource key, file, line, apiVersion) for the analyzer.
    pub deprecated_api_versions: Vec<DeprecatedApiVersion>,
}

/// A resource written with an older API version than the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprecatedApiVersion {
    /// `Kind/namespace/name`.
    pub resource: String,
    /// The file it is in.
    pub file: String,
    /// Its line.
    pub line: usize,
    /// The version as written.
    pub api_version: String,
    /// The version to use instead.
    pub current: String,
}

impl LoadResult {
    /// True when nothing was wrong.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Appends another result.
    pub fn extend(&mut self, other: LoadResult) {
        self.resources.extend(other.resources);
        self.errors.extend(other.errors);
        self.deprecated_api_versions
            .extend(other.deprecated_api_versions);
    }

    /// Turns the result into the resources, or all the errors if any.
    pub fn into_result(self) -> Result<Vec<Resource>, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(self.resources)
        } else {
            Err(self.errors)
        }
    }
}

/// A path that could not be read at all (as opposed to config that is wrong).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Loads every file and directory in `paths`. Directories are walked
/// recursively for `.yaml`, `.yml` and `.json` files in name order, skipping
/// hidden entries; files named directly are read whatever their extension.
/// Errors in the config are in the result; an unreadable path is `Err`.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<LoadResult, ReadError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p.as_ref(), true, &mut files)?;
    }
    let mut result = LoadResult::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| ReadError {
            path: file.clone(),
            source,
        })?;
        result.extend(load_str(&text, &file.display().to_string()));
    }
    check_duplicates(&mut result);
    Ok(result)
}

fn collect_files(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let meta = std::fs::metadata(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| ReadError {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        entries.sort();
        for e in entries {
            collect_files(&e, false, out)?;
        }
    } else if explicit
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Two resources of the same kind, namespace and name: the second would
/// silently replace the first in any cluster, so it is an error here.
fn check_duplicates(result: &mut LoadResult) {
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut dupes = Vec::new();
    for (i, r) in result.resources.iter().enumerate() {
        let key = r.key();
        match seen.get(&key) {
            Some((file, line)) => dupes.push((
                i,
                ConfigError {
                    file: r.origin.file.clone(),
                    line: Some(r.origin.line),
                    document: Some(r.origin.document),
                    resource: Some(key.clone()),
                    field: Some("metadata.name".into()),
                    message: format!(
                        "{key} is defined twice (first at {file}:{line}); rename one or delete the duplicate"
                    ),
                },
            )),
            None => {
                seen.insert(key, (r.origin.file.clone(), r.origin.line));
            }
        }
    }
    for (i, err) in dupes.into_iter().rev() {
        result.resources.remove(i);
        result.errors.push(err);
    }
}

/// Loads resources from text; `file` names the source in errors.
pub fn load_str(text: &str, file: &str) -> LoadResult {
    let mut result = LoadResult::default();
    let (docs, syntax) = parse_documents(text);
    for doc in docs {
        let lines = Arc::new(doc.lines);
        let ctx = DocCtx {
            file,
            document: doc.index,
            doc_line: doc.line,
            lines: &lines,
        };
        match doc.value {
            Value::Null => {}
            Value::Object(mut obj) if obj.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = obj.remove("items");
                match items {
                    Some(Value::Array(items)) => {
                        for (i, item) in items.into_iter().enumerate() {
                            let prefix = format!("items[{i}].");
                            ctx.load_object(item, &prefix, &mut result);
                        }
                    }
                    Some(Value::Null) | None => {}
                    Some(_) => result.errors.push(ctx.error(
                        "items",
                        None,
                        "items of a List must be a list of resources".into(),
                    )),
                }
            }
            value => ctx.load_object(value, "", &mut result),
        }
    }
    if let Some(e) = syntax {
        result.errors.push(ConfigError {
            file: file.to_string(),
            line: Some(e.line),
            document: Some(e.document),
            resource: None,
            field: None,
            message: format!(
                "invalid YAML at column {}: {}; the rest of the file was not read",
                e.column, e.message
            ),
        });
    }
    result
}

/// Loads one resource given as a JSON value, as an API server returns it;
/// `file` names it in errors and findings (meshd's Kubernetes source uses
/// `kubernetes:Kind/namespace/name`). There are no line numbers, so errors
/// name the field alone.
pub fn load_value(value: Value, file: &str) -> LoadResult {
    let mut result = LoadResult::default();
    let lines = Arc::new(LineIndex::default());
    let ctx = DocCtx {
        file,
        document: 1,
        doc_line: 1,
        lines: &lines,
    };
    ctx.load_object(value, "", &mut result);
    result
}

struct DocCtx<'a> {
    file: &'a str,
    document: usize,
    doc_line: usize,
    lines: &'a Arc<LineIndex>,
}

/// Kubernetes metadata fields; the ones the mesh does not use are accepted
/// and dropped, while a misspelt one (`namspace`) is an error, because it
/// would silently move the resource to another namespace.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct RawMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<Labels>,
    #[serde(default)]
    annotations: Option<Labels>,
    #[serde(default)]
    generate_name: Option<Value>,
    #[serde(default)]
    uid: Option<Value>,
    #[serde(default)]
    resource_version: Option<Value>,
    #[serde(default)]
    generation: Option<Value>,
    #[serde(default)]
    creation_timestamp: Option<Value>,
    #[serde(default)]
    deletion_timestamp: Option<Value>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<Value>,
    #[serde(default)]
    owner_references: Option<Value>,
    #[serde(default)]
    finalizers: Option<Value>,
    #[serde(default)]
    managed_fields: Option<Value>,
    #[serde(default)]
    self_link: Option<Value>,
}

impl DocCtx<'_> {
    fn error(&self, path: &str, resource: Option<&str>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: self.lines.line_of(path),
            document: Some(self.document),
            resource: resource.map(str::to_string),
            field: (!path.is_empty()).then(|| path.to_string()),
            message,
        }
    }

    fn load_object(&self, value: Value, prefix: &str, result: &mut LoadResult) {
        let at = |p: &str| format!("{prefix}{p}");
        let Value::Object(mut obj) = value else {
            result.errors.push(self.error(
                prefix.trim_end_matches('.'),
                None,
                "expected a Kubernetes resource: a mapping with apiVersion, kind, metadata and spec"
                    .into(),
            ));
            return;
        };
        let kind_s = match obj.get("kind") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                result.errors.push(self.error(
                    &at("kind"),
                    None,
                    "kind is missing or not a string; every resource needs `kind:` (e.g. VirtualService)"
                        .into(),
                ));
                return;
            }
        };
        let api_version = match obj.get("apiVersion") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                result.errors.push(self.error(
                    &at("apiVersion"),
                    None,
                    format!("apiVersion is missing; a {kind_s} needs e.g. `apiVersion: networking.istio.io/v1`"),
                ));
                return;
            }
        };
        let (kind, status) = match Kind::resolve(&api_version, &kind_s) {
            Ok(k) => k,
            Err(msg) => {
                let field = if Kind::ALL.iter().any(|k| k.name() == kind_s) {
                    "apiVersion"
                } else {
                    "kind"
                };
                result.errors.push(self.error(&at(field), None, msg));
                return;
            }
        };
        let istio = !kind.is_kubernetes();
        if istio {
            for key in obj.keys() {
                if !matches!(
                    key.as_str(),
                    "apiVersion" | "kind" | "metadata" | "spec" | "status"
                ) {
                    result.errors.push(self.error(
                        &at(key),
                        None,
                        format!("unknown top-level field {key:?}; a {kind} has apiVersion, kind, metadata and spec (is it indented under spec?)"),
                    ));
                }
            }
        }
        let meta_value = match obj.remove("metadata") {
            Some(Value::Null) | None => Value::Object(Map::new()),
            Some(v) => v,
        };
        let raw: RawMeta = match deserialize_at(meta_value, &at("metadata")) {
            Ok(m) => m,
            Err((path, msg)) => {
                result.errors.push(self.error(&path, None, msg));
                return;
            }
        };
        let name = raw.name.unwrap_or_default();
        let namespace = raw.namespace.unwrap_or_else(|| "default".to_string());
        let key = format!("{kind}/{namespace}/{name}");
        if name.is_empty() {
            result.errors.push(self.error(
                &at("metadata"),
                Some(&key),
                "metadata.name is required".into(),
            ));
            return;
        }
        if !is_dns1123_subdomain(&name) {
            result.errors.push(self.error(
                &at("metadata.name"),
                Some(&key),
                format!("name {name:?} is not a valid DNS-1123 name; use lowercase letters, digits, '-' and '.'"),
            ));
        }
        let meta = ObjectMeta {
            name,
            namespace,
            labels: raw.labels.unwrap_or_default(),
            annotations: raw.annotations.unwrap_or_default(),
        };
        let spec_value = match obj.remove("spec") {
            Some(Value::Null) | None => Value::Object(Map::new()),
            Some(v) => v,
        };
        let spec_path = at("spec");
        let status_value = match obj.remove("status") {
            Some(Value::Null) | None => Value::Object(Map::new()),
            Some(v) => v,
        };
        let spec = match kind {
            Kind::VirtualService => {
                deserialize_at(spec_value, &spec_path).map(Spec::VirtualService)
            }
            Kind::DestinationRule => {
                deserialize_at(spec_value, &spec_path).map(Spec::DestinationRule)
            }
            Kind::Gateway => deserialize_at(spec_value, &spec_path).map(Spec::Gateway),
            Kind::ServiceEntry => deserialize_at(spec_value, &spec_path).map(Spec::ServiceEntry),
            Kind::WorkloadEntry => deserialize_at(spec_value, &spec_path).map(Spec::WorkloadEntry),
            Kind::Sidecar => deserialize_at(spec_value, &spec_path).map(Spec::Sidecar),
            Kind::PeerAuthentication => {
                deserialize_at(spec_value, &spec_path).map(Spec::PeerAuthentication)
            }
            Kind::RequestAuthentication => {
                deserialize_at(spec_value, &spec_path).map(Spec::RequestAuthentication)
            }
            Kind::AuthorizationPolicy => {
                deserialize_at(spec_value, &spec_path).map(Spec::AuthorizationPolicy)
            }
            Kind::Telemetry => deserialize_at(spec_value, &spec_path).map(Spec::Telemetry),
            Kind::Service => deserialize_at(spec_value, &spec_path).map(Spec::Service),
            Kind::Pod => deserialize_at(spec_value, &spec_path).and_then(|spec| {
                // Only a cluster's status is read (IP, readiness); a
                // hand-written Pod usually has none.
                let status = deserialize_at(status_value, &at("status"))?;
                Ok(Spec::Pod(Pod { spec, status }))
            }),
            Kind::EndpointSlice => {
                // An EndpointSlice has no spec: its fields are top-level.
                let mut fields = Map::new();
                for k in ["addressType", "endpoints", "ports"] {
                    if let Some(v) = obj.remove(k) {
                        fields.insert(k.to_string(), v);
                    }
                }
                deserialize_at(Value::Object(fields), prefix.trim_end_matches('.'))
                    .map(Spec::EndpointSlice)
            }
            Kind::Node => deserialize_at(Value::Object(Map::new()), &spec_path).map(Spec::Node),
            Kind::Namespace => {
                deserialize_at(Value::Object(Map::new()), &spec_path).map(Spec::Namespace)
            }
            Kind::Deployment
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::Job => deserialize_at(spec_value, &spec_path).map(Spec::Controller),
        };
        let spec = match spec {
            Ok(s) => s,
            Err((path, msg)) => {
                result.errors.push(self.error(&path, Some(&key), msg));
                return;
            }
        };
        let resource = Resource {
            api_version: api_version.clone(),
            kind,
            meta,
            spec,
            origin: Origin {
                file: self.file.to_string(),
                document: self.document,
                line: if prefix.is_empty() {
                    self.doc_line
                } else {
                    self.lines
                        .line_of(prefix.trim_end_matches('.'))
                        .unwrap_or(self.doc_line)
                },
                prefix: prefix.to_string(),
                lines: Arc::clone(self.lines),
            },
        };
        let field_errors = resource.validate();
        if !field_errors.is_empty() {
            for fe in field_errors {
                let path = at(&fe.path);
                result
                    .errors
                    .push(self.error(&path, Some(&key), fe.message));
            }
            return;
        }
        if status == ApiVersionStatus::Deprecated {
            result.deprecated_api_versions.push(DeprecatedApiVersion {
                resource: key,
                file: self.file.to_string(),
                line: resource.origin.line,
                api_version,
                current: kind.current_api_version(),
            });
        }
        result.resources.push(resource);
    }
}

/// Drops `key: null` members (a bare `labels:` in YAML): Kubernetes and
/// Istio treat them as unset, and every optional or defaulted field here
/// means the same when absent.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Deserializes `value`, turning a failure into (absolute field path, message).
fn deserialize_at<T: DeserializeOwned>(
    mut value: Value,
    base: &str,
) -> Result<T, (String, String)> {
    strip_nulls(&mut value);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            base.to_string()
        } else if base.is_empty() {
            inner
        } else {
            format!("{base}.{inner}")
        };
        let mut msg = e.into_inner().to_string();
        // serde_path_to_error already points unknown-field errors at the field.
        if msg.starts_with("unknown field `") {
            msg.push_str("; check the spelling and indentation");
        }
        if msg.starts_with("invalid type: integer") && msg.contains("expected a string") {
            msg.push_str("; quote the value");
        }
        (path, msg)
    })
}

/// Kubernetes' rule for most object names.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Reads a MeshConfig file (the `mesh` value of Istio's `istio` ConfigMap,
/// as YAML or JSON). An empty file gives the defaults.
#[allow(clippy::result_large_err)] // cold path; the error carries the whole location
pub fn load_mesh_config(path: &Path) -> Result<super::MeshConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        document: None,
        resource: None,
        field: None,
        message: format!("cannot read mesh config: {e}"),
    })?;
    mesh_config_from_str(&text, &file)
}

/// Parses MeshConfig text; `file` names the source in errors.
#[allow(clippy::result_large_err)] // cold path; the error carries the whole location
pub fn mesh_config_from_str(text: &str, file: &str) -> Result<super::MeshConfig, ConfigError> {
    let (docs, syntax) = parse_documents(text);
    if let Some(e) = syntax {
        return Err(ConfigError {
            file: file.to_string(),
            line: Some(e.line),
            document: Some(e.document),
            resource: Some("MeshConfig".into()),
            field: None,
            message: format!("invalid YAML at column {}: {}", e.column, e.message),
        });
    }
    let Some(doc) = docs.into_iter().find(|d| !d.value.is_null()) else {
        return Ok(super::MeshConfig::default());
    };
    let err = |path: String, message: String| ConfigError {
        file: file.to_string(),
        line: doc.lines.line_of(&path),
        document: Some(doc.index),
        resource: Some("MeshConfig".into()),
        field: Some(path),
        message,
    };
    let mesh: super::MeshConfig = deserialize_at(doc.value.clone(), "")
        .map_err(|(p, m)| err(p.trim_start_matches('.').to_string(), m))?;
    let mut issues = super::validate::Issues::new();
    super::validate::Validate::validate(&mesh, "", &mut issues);
    if let Some(fe) = issues.into_errors().into_iter().next() {
        return Err(err(fe.path, fe.message));
    }
    Ok(mesh)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: prod
spec: {}
---
# a comment-only document is fine
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
spec: {}
";

    #[test]
    fn multi_document_and_defaults() {
        let r = load_str(TWO_DOCS, "a.yaml");
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.resources.len(), 2);
        assert_eq!(r.resources[0].key(), "AuthorizationPolicy/prod/deny-all");
        assert_eq!(r.resources[1].meta.namespace, "default");
        assert_eq!(r.resources[1].origin.line, 10);
        assert_eq!(r.resources[1].origin.document, 3);
        assert_eq!(r.deprecated_api_versions.len(), 1);
        assert_eq!(r.deprecated_api_versions[0].current, "security.istio.io/v1");
    }

    #[test]
    fn unknown_fields_name_file_line_and_field() {
        let text = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: x
spec:
  bogus: 1
";
        let r = load_str(text, "dir/pa.yaml");
        assert!(r.resources.is_empty());
        let e = &r.errors[0];
        assert_eq!(e.field.as_deref(), Some("spec.bogus"));
        assert_eq!(e.line, Some(6));
        let shown = e.to_string();
        assert!(shown.starts_with("dir/pa.yaml:6: PeerAuthentication/default/x (document 1) field spec.bogus: unknown field `bogus`"), "{shown}");
    }

    #[test]
    fn misspelt_metadata_is_rejected() {
        let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: x\n  namspace: prod\n";
        let r = load_str(text, "f.yaml");
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].field.as_deref(), Some("metadata.namspace"));
        assert_eq!(r.errors[0].line, Some(5));
    }

    #[test]
    fn unknown_kind_and_bad_api_version() {
        let text = "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: a}\n---\napiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: b}\n";
        let r = load_str(text, "f.yaml");
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert!(r.errors[0].message.contains("unknown kind \"Frobnicator\""));
        assert_eq!(r.errors[0].line, Some(2));
        assert!(r.errors[1]
            .message
            .contains("use networking.istio.io/v1 or networking.istio.io/v1beta1 or networking.istio.io/v1alpha3"));
        assert_eq!(r.errors[1].line, Some(5));
    }

    #[test]
    fn kind_list_items_load_with_their_own_lines() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: a}
  spec: {}
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: b}
  spec:
    nope: true
";
        let r = load_str(text, "list.yaml");
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.resources[0].origin.line, 4);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].field.as_deref(), Some("items[1].spec.nope"));
        assert_eq!(r.errors[0].line, Some(12));
    }

    #[test]
    fn json_files_load() {
        let text = r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "j", "namespace": "x"}, "spec": {}}"#;
        let r = load_str(text, "p.json");
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.resources[0].key(), "AuthorizationPolicy/x/j");
    }

    #[test]
    fn syntax_error_keeps_earlier_documents() {
        let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n---\nkind: [\n";
        let r = load_str(text, "s.yaml");
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].message.starts_with("invalid YAML"));
        assert_eq!(r.errors[0].document, Some(2));
    }

    #[test]
    fn directories_are_walked_and_duplicates_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("nested");
        std::fs::create_dir(&sub).unwrap();
        let doc = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {}\n";
        std::fs::write(dir.path().join("a.yaml"), doc).unwrap();
        std::fs::write(sub.join("b.yml"), doc).unwrap();
        std::fs::write(sub.join("notes.txt"), "not yaml: [").unwrap();
        std::fs::write(sub.join(".hidden.yaml"), "not yaml: [").unwrap();
        let r = load_paths(&[dir.path()]).unwrap();
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.errors.len(), 1);
        assert!(
            r.errors[0].message.contains("defined twice"),
            "{}",
            r.errors[0]
        );
        assert!(load_paths(&[dir.path().join("missing")]).is_err());
    }

    #[test]
    fn null_members_mean_unset() {
        let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: x\n  labels:\nspec:\n  selector:\n  mtls:\n";
        let r = load_str(text, "n.yaml");
        assert!(r.is_ok(), "{:?}", r.errors);
    }

    #[test]
    fn bad_names_are_rejected() {
        let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: Bad_Name}\n";
        let r = load_str(text, "n.yaml");
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].message.contains("DNS-1123"));
    }
}
