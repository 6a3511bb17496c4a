//! JSON Schema to Kubernetes *structural* schema, and a checker for the
//! rules the API server enforces on a CRD's `openAPIV3Schema`.
//!
//! schemars writes JSON Schema; Kubernetes accepts a narrower dialect (see
//! "Specifying a structural schema" in the Kubernetes CRD docs): every node
//! has a `type` (unless it says `x-kubernetes-int-or-string` or
//! `x-kubernetes-preserve-unknown-fields`), no `$ref`, no `type` arrays, no
//! `additionalProperties: false`, no `const`, `uniqueItems` or
//! `propertyNames`, and only the keys of `JSONSchemaProps`. [`to_structural`]
//! rewrites one into the other; [`check`] says why a schema is not
//! structural, so a test (or meshd) can hold every generated CRD to it.
//!
//! What is lost on the way is validation only, never shape: `null` is
//! dropped (the API server prunes nulls, which our deserializer reads as
//! unset), unions become the one object with every branch's fields (or a
//! node that keeps unknown fields when branches disagree on type), and
//! `deny_unknown_fields` becomes Kubernetes' pruning. meshd still validates
//! every object it reads with the same rules as files.

use serde_json::{Map, Value};

/// Keys of a structural schema node this module writes (a subset of
/// Kubernetes' `JSONSchemaProps`).
const KEYS: [&str; 21] = [
    "description",
    "type",
    "format",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
];

/// The `type`s Kubernetes accepts.
const TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// OpenAPI formats kept; schemars' own (`uint32`, `uint`, ...) are dropped,
/// as the API server does not know them (`minimum: 0` still says unsigned).
const FORMATS: [&str; 9] = [
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "date",
    "date-time",
    "password",
];

/// How many `$ref`s deep a recursive type is inlined before the node
/// becomes `x-kubernetes-preserve-unknown-fields`.
const MAX_REF_DEPTH: usize = 32;

const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";

/// Rewrites a JSON Schema (as schemars writes it, definitions included)
/// into a Kubernetes structural schema: `$ref`s inlined, `null` dropped,
/// unions collapsed, every node typed, only `JSONSchemaProps` keys.
pub fn to_structural(schema: &Value) -> Value {
    Value::Object(rewrite(schema, schema, 0))
}

fn preserve() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(PRESERVE.into(), Value::Bool(true));
    m
}

fn rewrite(node: &Value, root: &Value, depth: usize) -> Map<String, Value> {
    let obj = match node {
        Value::Object(o) => o,
        // `true` (anything) and `false` (nothing, which never appears in
        // a spec type) both become "keep whatever is there".
        _ => return preserve(),
    };
    let mut out = Map::new();
    if let Some(Value::String(r)) = obj.get("$ref") {
        let target = r.strip_prefix('#').and_then(|p| root.pointer(p));
        match target {
            Some(t) if depth < MAX_REF_DEPTH => out = rewrite(t, root, depth + 1),
            _ => out = preserve(),
        }
    }
    if let Some(Value::Array(all)) = obj.get("allOf") {
        for s in all {
            merge(&mut out, rewrite(s, root, depth));
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = obj.get(key) {
            merge(&mut out, union(branches, root, depth));
        }
    }
    for (k, v) in obj {
        match k.as_str() {
            "type" => set_type(&mut out, v),
            "const" => {
                out.insert("enum".into(), Value::Array(vec![v.clone()]));
            }
            "enum" => {
                let values: Vec<Value> = v
                    .as_array()
                    .map(|a| a.iter().filter(|x| !x.is_null()).cloned().collect())
                    .unwrap_or_default();
                out.insert("enum".into(), Value::Array(values));
            }
            "properties" => {
                let mut props = Map::new();
                if let Value::Object(p) = v {
                    for (name, s) in p {
                        props.insert(name.clone(), Value::Object(rewrite(s, root, depth)));
                    }
                }
                out.insert("properties".into(), Value::Object(props));
            }
            "additionalProperties" => match v {
                Value::Bool(false) => {}
                Value::Bool(true) => {
                    out.insert(PRESERVE.into(), Value::Bool(true));
                }
                s => {
                    out.insert(
                        "additionalProperties".into(),
                        Value::Object(rewrite(s, root, depth)),
                    );
                }
            },
            "items" => {
                let items = match v {
                    Value::Object(_) => rewrite(v, root, depth),
                    _ => preserve(),
                };
                out.insert("items".into(), Value::Object(items));
            }
            "exclusiveMinimum" | "exclusiveMaximum" => {
                // JSON Schema 2020-12 writes the bound itself; OpenAPI v3
                // (and Kubernetes) a boolean beside minimum/maximum.
                if let Some(n) = v.as_f64() {
                    let bound = if k == "exclusiveMinimum" {
                        "minimum"
                    } else {
                        "maximum"
                    };
                    out.insert(bound.into(), serde_json::json!(n));
                    out.insert(k.clone(), Value::Bool(true));
                } else if v.is_boolean() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "format" if v.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                out.insert(k.clone(), v.clone());
            }
            "description" => {
                if let Some(d) = v.as_str() {
                    let d = d.trim();
                    let is_union = obj.contains_key("anyOf") || obj.contains_key("oneOf");
                    let joined = match out.get("description").and_then(Value::as_str) {
                        // Keep the variants' docs a union collected.
                        Some(variants) if is_union && !d.is_empty() => {
                            format!("{d}\n\n{variants}")
                        }
                        _ => d.to_string(),
                    };
                    if !joined.is_empty() {
                        out.insert(k.clone(), Value::String(joined));
                    }
                }
            }
            "required" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                out.insert(k.clone(), v.clone());
            }
            "minimum" | "maximum" | "minLength" | "maxLength" | "pattern" | "minItems"
            | "maxItems" | "minProperties" | "maxProperties" => {
                out.insert(k.clone(), v.clone());
            }
            // `$ref`, `allOf`, `anyOf`, `oneOf` are handled above; the
            // rest (`$schema`, `title`, `default`, `nullable`, `examples`,
            // `uniqueItems`, `propertyNames`, definitions, ...) is dropped.
            _ => {}
        }
    }
    finish(out)
}

/// `type`, with `null` removed; `[integer, string]` is int-or-string, any
/// other mixture keeps unknown fields.
fn set_type(out: &mut Map<String, Value>, v: &Value) {
    let mut types: Vec<&str> = match v {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    types.retain(|t| *t != "null");
    types.sort_unstable();
    types.dedup();
    match types.as_slice() {
        [] => {}
        [t] => {
            out.insert("type".into(), Value::String((*t).to_string()));
        }
        ["integer", "string"] => {
            out.remove("type");
            out.insert(INT_OR_STRING.into(), Value::Bool(true));
        }
        _ => {
            out.remove("type");
            out.insert(PRESERVE.into(), Value::Bool(true));
        }
    }
}

/// Collapses `anyOf`/`oneOf` branches into one structural node.
fn union(branches: &[Value], root: &Value, depth: usize) -> Map<String, Value> {
    // `{type: null}` (JSON Schema) or `{enum: [null], nullable: true}`
    // (schemars' OpenAPI flavour): the `None` of an `Option`.
    let is_null = |b: &Value| {
        b.get("type").and_then(Value::as_str) == Some("null")
            || b.get("const").is_some_and(Value::is_null)
            || b.get("enum")
                .and_then(Value::as_array)
                .is_some_and(|e| e.iter().all(Value::is_null))
    };
    let rewritten: Vec<Map<String, Value>> = branches
        .iter()
        .filter(|b| !is_null(b))
        .map(|b| rewrite(b, root, depth))
        .collect();
    let type_of = |m: &Map<String, Value>| m.get("type").and_then(Value::as_str).map(String::from);
    match rewritten.as_slice() {
        [] => return preserve(),
        [one] => return one.clone(),
        _ => {}
    }
    let types: Vec<Option<String>> = rewritten.iter().map(type_of).collect();
    let all = |t: &str| types.iter().all(|x| x.as_deref() == Some(t));
    let mut out = Map::new();
    if all("string") {
        // Enums whose variants carry docs: one `const` per variant.
        out.insert("type".into(), "string".into());
        let mut values = Vec::new();
        let mut docs = Vec::new();
        let mut closed = true;
        for b in &rewritten {
            match b.get("enum").and_then(Value::as_array) {
                Some(e) => {
                    values.extend(e.iter().cloned());
                    if let (Some(d), [Value::String(name)]) =
                        (b.get("description").and_then(Value::as_str), e.as_slice())
                    {
                        docs.push(format!("- `{name}`: {d}"));
                    }
                }
                None => closed = false,
            }
        }
        if closed {
            out.insert("enum".into(), Value::Array(values));
        }
        if !docs.is_empty() {
            out.insert("description".into(), docs.join("\n").into());
        }
    } else if all("object") {
        // Externally tagged or untagged struct variants: one object with
        // every branch's fields; which combination is valid is meshd's to say.
        out.insert("type".into(), "object".into());
        let mut props = Map::new();
        for b in &rewritten {
            if let Some(Value::Object(p)) = b.get("properties") {
                for (k, v) in p {
                    props.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            if b.get(PRESERVE) == Some(&Value::Bool(true)) {
                out.insert(PRESERVE.into(), Value::Bool(true));
            }
        }
        out.insert("properties".into(), Value::Object(props));
    } else if rewritten.iter().all(|b| scalar_int_or_string(b, &type_of)) {
        out.insert(INT_OR_STRING.into(), Value::Bool(true));
    } else {
        out = preserve();
    }
    out
}

fn scalar_int_or_string(
    b: &Map<String, Value>,
    type_of: &impl Fn(&Map<String, Value>) -> Option<String>,
) -> bool {
    b.get(INT_OR_STRING) == Some(&Value::Bool(true))
        || matches!(type_of(b).as_deref(), Some("integer" | "string"))
}

/// Folds `from` into `into`: keys `into` already has win, except that
/// properties are unioned.
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) if k == "properties" => {
                for (pk, pv) in b {
                    a.entry(pk).or_insert(pv);
                }
            }
            (Some(_), _) => {}
            (None, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Gives a node without `type` the one its keywords imply, drops keywords
/// a structural node may not combine, and keeps only known keys.
fn finish(mut out: Map<String, Value>) -> Map<String, Value> {
    if out.get(INT_OR_STRING) == Some(&Value::Bool(true)) {
        out.remove("type");
        out.remove(PRESERVE);
        out.retain(|k, _| k == INT_OR_STRING || k == "description");
        return out;
    }
    if !out.contains_key("type") {
        let implied = if out.contains_key("properties") || out.contains_key("additionalProperties")
        {
            Some("object")
        } else if out.contains_key("items") {
            Some("array")
        } else if let Some(Value::Array(e)) = out.get("enum") {
            if !e.is_empty() && e.iter().all(Value::is_string) {
                Some("string")
            } else {
                None
            }
        } else {
            None
        };
        match implied {
            Some(t) => {
                out.insert("type".into(), t.into());
            }
            None => {
                out.insert(PRESERVE.into(), Value::Bool(true));
            }
        }
    }
    if out.contains_key("properties") {
        out.remove("additionalProperties");
    }
    if out.get("type").and_then(Value::as_str) == Some("array") && !out.contains_key("items") {
        out.insert("items".into(), Value::Object(preserve()));
    }
    if let Some(Value::Array(req)) = out.get("required") {
        let props = out.get("properties").and_then(Value::as_object);
        let kept: Vec<Value> = req
            .iter()
            .filter(|r| {
                r.as_str()
                    .is_some_and(|r| props.is_some_and(|p| p.contains_key(r)))
            })
            .cloned()
            .collect();
        if kept.is_empty() {
            out.remove("required");
        } else {
            out.insert("required".into(), Value::Array(kept));
        }
    }
    out.retain(|k, _| KEYS.contains(&k.as_str()));
    out
}

/// Every reason `schema` is not a structural schema the API server
/// accepts, each with the path of the node (`.properties.spec...`). Empty
/// when it is structural.
pub fn check(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check_node(schema, "", &mut problems);
    problems
}

fn check_node(node: &Value, path: &str, problems: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    let Value::Object(obj) = node else {
        problems.push(format!("{at}: a schema node must be an object, got {node}"));
        return;
    };
    for k in obj.keys() {
        if !KEYS.contains(&k.as_str()) {
            problems.push(format!("{at}: key {k:?} is not allowed here"));
        }
    }
    let flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
    let int_or_string = flag(INT_OR_STRING);
    let preserves = flag(PRESERVE);
    match obj.get("type") {
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {
            if int_or_string {
                problems.push(format!("{at}: {INT_OR_STRING} must not have a type"));
            }
        }
        Some(t) => problems.push(format!("{at}: type {t} is not one of {TYPES:?}")),
        None if int_or_string || preserves => {}
        None => problems.push(format!(
            "{at}: no type (and neither {INT_OR_STRING} nor {PRESERVE})"
        )),
    }
    let ty = obj.get("type").and_then(Value::as_str);
    for (k, want) in [
        ("description", "string"),
        ("pattern", "string"),
        ("format", "string"),
        ("exclusiveMinimum", "boolean"),
        ("exclusiveMaximum", "boolean"),
        (INT_OR_STRING, "boolean"),
        (PRESERVE, "boolean"),
    ] {
        if let Some(v) = obj.get(k) {
            let ok = match want {
                "string" => v.is_string(),
                _ => v.is_boolean(),
            };
            if !ok {
                problems.push(format!("{at}: {k} must be a {want}, got {v}"));
            }
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!(
            "{at}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if let Some(p) = obj.get("properties") {
        if ty != Some("object") {
            problems.push(format!("{at}: properties on a non-object node"));
        }
        match p {
            Value::Object(p) => {
                for (name, s) in p {
                    check_node(s, &format!("{path}.properties.{name}"), problems);
                }
            }
            _ => problems.push(format!("{at}: properties must be an object")),
        }
    }
    if let Some(a) = obj.get("additionalProperties") {
        if ty != Some("object") {
            problems.push(format!("{at}: additionalProperties on a non-object node"));
        }
        match a {
            Value::Object(_) => check_node(a, &format!("{path}.additionalProperties"), problems),
            _ => problems.push(format!(
                "{at}: additionalProperties must be a schema (false is not allowed; true is {PRESERVE})"
            )),
        }
    }
    match (ty, obj.get("items")) {
        (Some("array"), Some(items @ Value::Object(_))) => {
            check_node(items, &format!("{path}.items"), problems)
        }
        (Some("array"), _) => problems.push(format!("{at}: an array needs one items schema")),
        (_, Some(_)) => problems.push(format!("{at}: items on a non-array node")),
        _ => {}
    }
    if let Some(req) = obj.get("required") {
        let props = obj.get("properties").and_then(Value::as_object);
        for r in req.as_array().map(Vec::as_slice).unwrap_or_default() {
            if !r
                .as_str()
                .is_some_and(|r| props.is_some_and(|p| p.contains_key(r)))
            {
                problems.push(format!("{at}: required field {r} is not a property"));
            }
        }
    }
    if let Some(e) = obj.get("enum") {
        match e.as_array() {
            Some(values) if !values.is_empty() => {
                if ty == Some("string") && !values.iter().all(Value::is_string) {
                    problems.push(format!("{at}: enum values must be strings"));
                }
            }
            _ => problems.push(format!("{at}: enum must be a non-empty array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inlines_refs_and_drops_null() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Outer",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "inner": {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}], "default": null},
                "name": {"type": ["string", "null"], "description": "  The name. "},
                "count": {"type": "integer", "format": "uint32", "minimum": 0},
                "ratio": {"type": "number", "format": "double", "exclusiveMinimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["name", "gone"],
            "$defs": {"Inner": {"type": "object", "properties": {"on": {"type": "boolean"}}}}
        });
        let s = to_structural(&schema);
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {
                    "inner": {"type": "object", "properties": {"on": {"type": "boolean"}}},
                    "name": {"type": "string", "description": "The name."},
                    "count": {"type": "integer", "minimum": 0},
                    "ratio": {"type": "number", "format": "double", "minimum": 0.0, "exclusiveMinimum": true},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["name"],
            })
        );
        assert_eq!(check(&s), Vec::<String>::new());
    }

    #[test]
    fn collapses_unions() {
        // IntOrString, written either way.
        let ios = to_structural(&json!({"anyOf": [{"type": "integer"}, {"type": "string"}]}));
        assert_eq!(ios, json!({INT_OR_STRING: true}));
        let ios = to_structural(&json!({"type": ["string", "integer", "null"]}));
        assert_eq!(ios, json!({INT_OR_STRING: true}));
        // Option<enum> as schemars' OpenAPI settings write it.
        let opt = to_structural(&json!({"anyOf": [
            {"type": "string", "enum": ["X", "Y"]},
            {"enum": [null], "nullable": true},
        ], "description": "field"}));
        assert_eq!(
            opt,
            json!({"type": "string", "enum": ["X", "Y"], "description": "field"})
        );
        // Unit variants with docs.
        let e = to_structural(&json!({"oneOf": [
            {"type": "string", "const": "A", "description": "first"},
            {"type": "string", "enum": ["B"]},
        ]}));
        assert_eq!(
            e,
            json!({"type": "string", "enum": ["A", "B"], "description": "- `A`: first"})
        );
        // Struct variants: one object with all fields.
        let o = to_structural(&json!({"oneOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ]}));
        assert_eq!(
            o,
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}})
        );
        // Anything else keeps what it is given.
        let any = to_structural(&json!({"anyOf": [{"type": "boolean"}, {"type": "object"}]}));
        assert_eq!(any, json!({PRESERVE: true}));
        assert_eq!(to_structural(&json!(true)), json!({PRESERVE: true}));
        for s in [ios, e, o, any] {
            assert_eq!(check(&s), Vec::<String>::new());
        }
    }

    #[test]
    fn recursive_refs_stop() {
        let schema = json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
        });
        let s = to_structural(&schema);
        assert_eq!(check(&s), Vec::<String>::new());
        let mut depth = 0;
        let mut n = &s;
        while let Some(next) = n.pointer("/properties/next") {
            n = next;
            depth += 1;
        }
        assert_eq!(n, &json!({PRESERVE: true}));
        assert_eq!(depth, MAX_REF_DEPTH);
    }

    #[test]
    fn checker_names_each_problem() {
        let bad = json!({
            "type": "object",
            "properties": {
                "a": {"$ref": "#/x"},
                "b": {"type": ["string", "null"]},
                "c": {"type": "object", "additionalProperties": false},
                "d": {"type": "array"},
                "e": {"type": "integer", "exclusiveMinimum": 1},
            },
            "required": ["z"],
        });
        let problems = check(&bad);
        for want in [
            ".properties.a: key \"$ref\" is not allowed here",
            ".properties.a: no type",
            ".properties.b: type [\"string\",\"null\"] is not one of",
            ".properties.c: additionalProperties must be a schema",
            ".properties.d: an array needs one items schema",
            ".properties.e: exclusiveMinimum must be a boolean",
            "<root>: required field \"z\" is not a property",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {problems:#?}"
            );
        }
    }
}
