//! Tests of Telemetry deserialization and validation.

use super::*;
use serde_json::json;

fn parse(v: serde_json::Value) -> Telemetry {
    serde_json::from_value(v).unwrap()
}

fn paths(t: &Telemetry) -> Vec<String> {
    let mut issues = Issues::new();
    t.validate("spec", &mut issues);
    issues.errors().iter().map(|e| e.path.clone()).collect()
}

#[test]
fn parses_realistic_resource() {
    let t = parse(json!({
        "selector": {"matchLabels": {"service.istio.io/canonical-name": "foo"}},
        "tracing": [{
            "match": {"mode": "CLIENT"},
            "providers": [{"name": "zipkin-alternate"}],
            "randomSamplingPercentage": 10.0,
            "disableSpanReporting": false,
            "useRequestIdForTraceSampling": false,
            "customTags": {
                "my_new_foo_tag": {"literal": {"value": "foo"}},
                "pod": {"environment": {"name": "POD_NAME", "defaultValue": "unknown"}},
                "rid": {"header": {"name": "x-request-id"}}
            }
        }],
        "metrics": [{
            "providers": [{"name": "prometheus"}],
            "reportingInterval": "10s",
            "overrides": [
                {"match": {"metric": "ALL_METRICS", "mode": "SERVER"}, "disabled": true},
                {"tagOverrides": {"request_host": {"value": "request.host"}}},
                {"match": {"metric": "REQUEST_COUNT"}, "tagOverrides": {"response_code": {"operation": "REMOVE"}}},
                {"match": {"customMetric": "my_metric"}}
            ]
        }],
        "accessLogging": [{
            "match": {"mode": "SERVER"},
            "providers": [{"name": "envoy"}],
            "disabled": false,
            "filter": {"expression": "response.code >= 400"}
        }]
    }));
    assert_eq!(
        t.tracing[0].match_.map(|m| m.mode),
        Some(WorkloadMode::Client)
    );
    assert_eq!(t.tracing[0].custom_tags.len(), 3);
    assert_eq!(
        t.metrics[0].overrides[0]
            .match_
            .as_ref()
            .and_then(|m| m.metric),
        Some(IstioMetric::AllMetrics)
    );
    assert!(paths(&t).is_empty(), "{:?}", paths(&t));
    assert_eq!(parse(serde_json::to_value(&t).unwrap()), t);
    let refs = t.provider_refs();
    assert_eq!(refs.len(), 3);
    assert_eq!(
        refs[0],
        (
            "spec.tracing[0].providers[0].name".to_string(),
            "zipkin-alternate"
        )
    );
    assert!(WorkloadMode::ClientAndServer.covers(WorkloadMode::Server));
    assert!(!WorkloadMode::Client.covers(WorkloadMode::Server));
}

#[test]
fn rejects_unknown_fields() {
    for bad in [
        json!({"tracings": []}),
        json!({"tracing": [{"samplingPercentage": 1}]}),
        json!({"metrics": [{"overrides": [{"match": {"metrics": "REQUEST_COUNT"}}]}]}),
        json!({"metrics": [{"overrides": [{"match": {"metric": "REQUESTS"}}]}]}),
        json!({"accessLogging": [{"filter": {"expr": "x"}}]}),
        json!({"tracing": [{"customTags": {"a": {"literal": {"val": "x"}}}}]}),
    ] {
        assert!(
            serde_json::from_value::<Telemetry>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn sampling_percentage_range() {
    let t = parse(json!({"tracing": [
        {"randomSamplingPercentage": 100.0},
        {"randomSamplingPercentage": 100.5},
        {"randomSamplingPercentage": -1}
    ]}));
    assert_eq!(
        paths(&t),
        vec![
            "spec.tracing[1].randomSamplingPercentage",
            "spec.tracing[2].randomSamplingPercentage"
        ]
    );
}

#[test]
fn provider_names_non_empty() {
    let t = parse(json!({
        "tracing": [{"providers": [{"name": ""}]}],
        "metrics": [{"providers": [{}]}],
        "accessLogging": [{"providers": [{"name": " "}]}]
    }));
    assert_eq!(
        paths(&t),
        vec![
            "spec.tracing[0].providers[0].name",
            "spec.metrics[0].providers[0].name",
            "spec.accessLogging[0].providers[0].name"
        ]
    );
}

#[test]
fn selector_and_target_ref_exclusive() {
    let t = parse(json!({
        "selector": {"matchLabels": {"app": "a"}},
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    }));
    assert_eq!(paths(&t), vec!["spec"]);
}

#[test]
fn custom_tags_one_of() {
    let t = parse(json!({"tracing": [{"customTags": {
        "none": {},
        "two": {"literal": {"value": "a"}, "header": {"name": "x"}},
        "empty": {"literal": {"value": ""}},
        "env": {"environment": {"name": ""}}
    }}]}));
    assert_eq!(
        paths(&t),
        vec![
            "spec.tracing[0].customTags.empty.literal.value",
            "spec.tracing[0].customTags.env.environment.name",
            "spec.tracing[0].customTags.none",
            "spec.tracing[0].customTags.two",
        ]
    );
}

#[test]
fn metric_override_rules() {
    let t = parse(json!({"metrics": [{
        "reportingInterval": "0s",
        "overrides": [
            {"match": {"metric": "REQUEST_COUNT", "customMetric": "x"}},
            {"tagOverrides": {"a": {"operation": "UPSERT"}, "b": {"operation": "REMOVE", "value": "x"}, "c": {}}}
        ]
    }]}));
    assert_eq!(
        paths(&t),
        vec![
            "spec.metrics[0].overrides[0].match",
            "spec.metrics[0].overrides[1].tagOverrides.a.value",
            "spec.metrics[0].overrides[1].tagOverrides.b.value",
            "spec.metrics[0].overrides[1].tagOverrides.c.value",
            "spec.metrics[0].reportingInterval",
        ]
    );
}

#[test]
fn access_log_filter_non_empty() {
    let t = parse(json!({"accessLogging": [{"filter": {"expression": ""}}]}));
    assert_eq!(paths(&t), vec!["spec.accessLogging[0].filter.expression"]);
}

#[test]
fn cel_expressions_must_parse() {
    let t = parse(json!({
        "metrics": [{"overrides": [{"tagOverrides": {
            "good": {"value": "request.headers['x-foo']"},
            "bad": {"value": "request.host +"}
        }}]}],
        "accessLogging": [
            {"filter": {"expression": "response.code >= 400"}},
            {"filter": {"expression": "response.code >= (400"}}
        ]
    }));
    assert_eq!(
        paths(&t),
        vec![
            "spec.metrics[0].overrides[0].tagOverrides.bad.value",
            "spec.accessLogging[1].filter.expression",
        ]
    );
}

#[test]
fn bad_cel_refuses_the_resource_with_file_line_and_field() {
    let text = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: logs
  namespace: default
spec:
  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: response.code >=
";
    let r = crate::config::load_str(text, "tel.yaml");
    assert!(r.resources.is_empty());
    let e = &r.errors[0];
    assert_eq!(
        e.field.as_deref(),
        Some("spec.accessLogging[0].filter.expression")
    );
    assert_eq!(e.line, Some(11));
    let shown = e.to_string();
    assert!(
        shown.starts_with("tel.yaml:11: Telemetry/default/logs (document 1) field spec.accessLogging[0].filter.expression: invalid CEL expression"),
        "{shown}"
    );
}
