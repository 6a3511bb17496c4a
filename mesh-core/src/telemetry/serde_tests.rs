//! The policy round-trips through serde exactly (what a control plane
//! sends an SDK workload), and a text that does not describe a policy this
//! build runs is refused.

use serde_json::{json, Value};

use super::*;
use crate::config::common::Labels;
use crate::config::telemetry::Telemetry;

fn policy(mesh: Value, specs: &[(&str, Value)], labels: &[(&str, &str)]) -> TelemetryPolicy {
    let mesh: MeshConfig = serde_json::from_value(mesh).unwrap();
    let specs: Vec<(String, Telemetry)> = specs
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::from_value(v.clone()).unwrap()))
        .collect();
    let refs: Vec<_> = specs
        .iter()
        .map(|(name, spec)| TelemetryResource {
            namespace: "default",
            name,
            spec,
        })
        .collect();
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    policy_for(
        &refs,
        &mesh,
        Workload {
            namespace: "default",
            labels: &labels,
        },
    )
}

fn round_trip(p: &TelemetryPolicy) -> TelemetryPolicy {
    let text = serde_json::to_string(p).unwrap();
    let back: TelemetryPolicy = serde_json::from_str(&text).unwrap();
    // And the text of the copy is the same text.
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
    back
}

/// Every variant the policy has: tag upserts and removals, a custom
/// metric, a reporting interval, an ignored provider, an extension tracer
/// with an odd sampling rate and custom tags, the legacy tracer, and file
/// (text, JSON), OpenTelemetry and gRPC access logs with a filter.
#[test]
fn every_shape_round_trips() {
    let mesh = json!({
        "accessLogFile": "/dev/stdout",
        "accessLogEncoding": "JSON",
        "defaultConfig": {"tracing": {"sampling": 12.345, "zipkin": {"address": "z:9411"}}},
        "extensionProviders": [
            {"name": "sd", "stackdriver": {}},
            {"name": "otel", "opentelemetry": {"service": "otel.svc", "port": 4317}},
            {"name": "json", "envoyFileAccessLog": {"path": "/dev/stderr", "logFormat": {"labels": {"code": "%RESPONSE_CODE%", "n": 1.0}}}},
            {"name": "text", "envoyFileAccessLog": {"path": "/var/log/a", "logFormat": {"text": "%RESPONSE_CODE%\n"}}},
            {"name": "otel-logs", "envoyOtelAls": {"service": "otel.svc", "port": 4317}},
            {"name": "als", "envoyHttpAls": {"service": "als.svc", "port": 9000, "logName": "x"}}
        ]
    });
    let rich = policy(
        mesh.clone(),
        &[(
            "w",
            json!({
                "selector": {"matchLabels": {"app": "a"}},
                "metrics": [
                    {"providers": [{"name": "prometheus"}, {"name": "sd"}], "reportingInterval": "2.5s", "overrides": [
                        {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": true},
                        {"match": {"metric": "REQUEST_DURATION"}, "tagOverrides": {
                            "h": {"value": "request.headers['x-h'] + 'x'"},
                            "request_protocol": {"operation": "REMOVE"}
                        }},
                        {"match": {"customMetric": "my_metric"}, "tagOverrides": {"c": {"value": "response.code"}}}
                    ]}
                ],
                "tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 0.1234567891234,
                    "customTags": {"t": {"literal": {"value": "v"}}, "e": {"environment": {"name": "E", "defaultValue": "d"}}}}],
                "accessLogging": [
                    {"match": {"mode": "CLIENT"}, "providers": [{"name": "json"}, {"name": "text"}], "filter": {"expression": "response.code >= 400"}},
                    {"match": {"mode": "SERVER"}, "providers": [{"name": "otel-logs"}, {"name": "als"}]}
                ]
            }),
        )],
        &[("app", "a")],
    );
    assert_eq!(round_trip(&rich), rich);
    assert!(rich.client.access_logs.logs[0].filter.is_some());
    assert!(!rich.client.metrics.custom.is_empty());

    // MeshConfig decides: the legacy tracer and the MeshConfig log.
    let legacy = policy(mesh, &[], &[("app", "a")]);
    assert!(matches!(
        legacy.client.tracing.provider,
        Some(TracingProvider::ProxyConfig(_))
    ));
    assert_eq!(round_trip(&legacy), legacy);
    let default = policy(json!({}), &[], &[]);
    assert_eq!(round_trip(&default), default);
}

#[test]
fn a_filter_compiles_again_on_the_way_in() {
    let p = policy(
        json!({}),
        &[(
            "ns",
            json!({"accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}]}),
        )],
        &[],
    );
    let back = round_trip(&p);
    let log = &back.server.access_logs.logs[0];
    let attrs = |code| Attributes {
        response: Response {
            code: Some(code),
            ..Response::default()
        },
        ..Attributes::default()
    };
    assert!(log.selects(&attrs(503)));
    assert!(!log.selects(&attrs(200)));
}

#[test]
fn what_this_build_cannot_run_is_refused() {
    let p = policy(json!({}), &[], &[]);
    let mut v = serde_json::to_value(&p).unwrap();
    // An expression that does not compile.
    v["server"]["access_logs"]["logs"] = json!([{
        "provider": "envoy",
        "sink": {"file": {"path": "/dev/stdout", "format": "default_text"}},
        "filter": "response.code >="
    }]);
    let err = serde_json::from_value::<TelemetryPolicy>(v.clone()).unwrap_err();
    assert!(err.to_string().contains("invalid CEL expression"), "{err}");
    // A field this build does not know.
    v["server"]["access_logs"]["logs"] = json!([]);
    assert!(serde_json::from_value::<TelemetryPolicy>(v.clone()).is_ok());
    v["client"]["metrics"]["sampling"] = json!(1);
    assert!(serde_json::from_value::<TelemetryPolicy>(v).is_err());
}
