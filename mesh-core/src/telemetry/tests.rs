//! Tests of selection and merging: one per Telemetry API field, checked
//! against what istiod's `pilot/pkg/model/telemetry.go` computes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::config::common::Labels;
use crate::config::telemetry::{IstioMetric, Telemetry};

struct Set(Vec<(String, String, Telemetry)>);

impl Set {
    fn new(items: &[(&str, &str, Value)]) -> Self {
        Set(items
            .iter()
            .map(|(ns, n, v)| {
                (
                    ns.to_string(),
                    n.to_string(),
                    serde_json::from_value(v.clone()).unwrap(),
                )
            })
            .collect())
    }

    fn policy(&self, mesh: &MeshConfig, ns: &str, labels: &[(&str, &str)]) -> TelemetryPolicy {
        let refs: Vec<_> = self
            .0
            .iter()
            .map(|(ns, name, spec)| TelemetryResource {
                namespace: ns,
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
            mesh,
            Workload {
                namespace: ns,
                labels: &labels,
            },
        )
    }
}

fn mesh(v: Value) -> MeshConfig {
    serde_json::from_value(v).unwrap()
}

fn app(a: &str) -> Vec<(&str, &str)> {
    vec![("app", a)]
}

fn tags(p: &MetricsPolicy, m: IstioMetric) -> BTreeMap<String, String> {
    p.metric(m)
        .unwrap()
        .tags
        .iter()
        .map(|(k, a)| {
            let v = match a {
                TagAction::Upsert(e) => e.source().to_string(),
                TagAction::Remove => "REMOVE".to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn no_resources_is_istios_default() {
    let p = Set::new(&[]).policy(&MeshConfig::default(), "default", &app("a"));
    assert!(p.sources.is_empty());
    for d in [&p.client, &p.server] {
        assert!(d.metrics.enabled);
        assert!(IstioMetric::STANDARD.iter().all(|m| d.metrics.records(*m)));
        assert!(!d.tracing.is_active());
        assert_eq!(d.tracing.random_sampling_percentage, 1.0);
        assert_eq!(d.access_logs.source, AccessLogSource::MeshConfig);
        assert!(d.access_logs.logs.is_empty());
    }
    // MeshConfig accessLogFile / encoding / format decide the logs.
    let m = mesh(json!({
        "accessLogFile": "/dev/stdout",
        "accessLogEncoding": "JSON",
        "accessLogFormat": "{\"code\": \"%RESPONSE_CODE%\"}"
    }));
    let p = Set::new(&[]).policy(&m, "default", &app("a"));
    let log = &p.server.access_logs.logs[0];
    match &log.sink {
        AccessLogSink::File {
            path,
            format: LogFormat::Json(Some(f)),
        } => {
            assert_eq!(path, "/dev/stdout");
            assert_eq!(f["code"], "%RESPONSE_CODE%");
        }
        other => panic!("{other:?}"),
    }
    let m = mesh(json!({"accessLogFile": "/tmp/a.log"}));
    let p = Set::new(&[]).policy(&m, "default", &app("a"));
    assert_eq!(
        p.client.access_logs.logs[0].sink,
        AccessLogSink::File {
            path: "/tmp/a.log".into(),
            format: LogFormat::DefaultText
        }
    );
}

#[test]
fn selection_root_then_namespace_then_workload() {
    let set = Set::new(&[
        ("istio-system", "mesh", json!({})),
        ("istio-system", "b-second-mesh", json!({})),
        ("default", "ns", json!({"selector": {"matchLabels": {}}})),
        (
            "default",
            "w",
            json!({"selector": {"matchLabels": {"app": "a"}}}),
        ),
        (
            "default",
            "other",
            json!({"selector": {"matchLabels": {"app": "b"}}}),
        ),
        ("other", "ns", json!({})),
        (
            "istio-system",
            "sel",
            json!({"selector": {"matchLabels": {"app": "a"}}}),
        ),
        (
            "default",
            "gw",
            json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "g"}]}),
        ),
    ]);
    let p = set.policy(&MeshConfig::default(), "default", &app("a"));
    // Oldest (here: first by name) namespace-wide resource wins; root
    // selector resources do not apply to other namespaces.
    assert_eq!(
        p.sources,
        ["istio-system/b-second-mesh", "default/ns", "default/w"]
    );
    let p = set.policy(&MeshConfig::default(), "istio-system", &app("a"));
    assert_eq!(
        p.sources,
        ["istio-system/b-second-mesh", "istio-system/sel"]
    );
    let p = set.policy(
        &MeshConfig::default(),
        "default",
        &[("gateway.networking.k8s.io/gateway-name", "g")],
    );
    assert_eq!(
        p.sources,
        ["istio-system/b-second-mesh", "default/ns", "default/gw"]
    );
    let m = mesh(json!({"rootNamespace": "mesh-root"}));
    assert_eq!(
        set.policy(&m, "default", &app("a")).sources,
        ["default/ns", "default/w"]
    );
}

#[test]
fn metrics_overrides_accumulate_per_metric_and_mode() {
    let set = Set::new(&[
        (
            "istio-system",
            "mesh",
            json!({"metrics": [{"overrides": [
                {"tagOverrides": {"request_host": {"value": "request.host"}, "x": {"value": "'root'"}}},
                {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": true}
            ]}]}),
        ),
        (
            "default",
            "ns",
            json!({"metrics": [{"overrides": [
                {"match": {"metric": "REQUEST_COUNT"}, "tagOverrides": {"x": {"operation": "REMOVE"}}},
                {"match": {"metric": "REQUEST_DURATION", "mode": "SERVER"}, "disabled": true}
            ]}]}),
        ),
        (
            "default",
            "w",
            json!({"selector": {"matchLabels": {"app": "a"}}, "metrics": [{"overrides": [
                {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": false,
                 "tagOverrides": {"foo": {"value": "request.headers['x-foo']"}}},
                {"match": {"customMetric": "my_metric"}, "disabled": true}
            ]}]}),
        ),
    ]);
    let p = set.policy(&MeshConfig::default(), "default", &app("a"));
    let c = &p.client.metrics;
    assert!(
        c.records(IstioMetric::RequestCount),
        "re-enabled by the workload"
    );
    assert_eq!(
        tags(c, IstioMetric::RequestCount),
        BTreeMap::from([
            ("foo".into(), "request.headers['x-foo']".into()),
            ("request_host".into(), "request.host".into()),
            ("x".into(), "REMOVE".into()),
        ])
    );
    assert_eq!(
        tags(c, IstioMetric::TcpSentBytes),
        BTreeMap::from([
            ("request_host".into(), "request.host".into()),
            ("x".into(), "'root'".into())
        ])
    );
    assert!(c.records(IstioMetric::RequestDuration));
    assert!(!p.server.metrics.records(IstioMetric::RequestDuration));
    assert!(!c.custom["my_metric"].enabled);
    // Without the workload resource, the root's CLIENT disable stands.
    let p = set.policy(&MeshConfig::default(), "default", &app("z"));
    assert!(!p.client.metrics.records(IstioMetric::RequestCount));
    assert!(p.server.metrics.records(IstioMetric::RequestCount));
    // Tag overrides evaluate against attributes.
    let attrs = Attributes {
        request: Request {
            host: Some("h"),
            ..Request::default()
        },
        ..Attributes::default()
    };
    match &p
        .server
        .metrics
        .metric(IstioMetric::RequestSize)
        .unwrap()
        .tags["request_host"]
    {
        TagAction::Upsert(e) => assert_eq!(e.tag_value(&attrs), "h"),
        TagAction::Remove => panic!(),
    }
}

#[test]
fn all_metrics_disabled_per_mode_and_reenabled() {
    let set = Set::new(&[
        (
            "istio-system",
            "mesh",
            json!({"metrics": [{"overrides": [
                {"match": {"metric": "ALL_METRICS", "mode": "SERVER"}, "disabled": true}
            ]}]}),
        ),
        (
            "default",
            "w",
            json!({"selector": {"matchLabels": {"app": "a"}}, "metrics": [{"overrides": [
                {"match": {"metric": "REQUEST_COUNT", "mode": "SERVER"}}
            ]}]}),
        ),
        (
            "default",
            "off",
            json!({"selector": {"matchLabels": {"app": "off"}}, "metrics": [{"overrides": [
                {"disabled": true}
            ]}]}),
        ),
    ]);
    let p = set.policy(&MeshConfig::default(), "default", &app("b"));
    assert!(!p.server.metrics.enabled);
    assert!(!p.server.metrics.records(IstioMetric::RequestCount));
    assert!(p.client.metrics.enabled);
    // A later override for the direction turns the whole filter back on.
    let p = set.policy(&MeshConfig::default(), "default", &app("a"));
    assert!(p.server.metrics.enabled);
    assert!(p.server.metrics.records(IstioMetric::TcpOpenedConnections));
    // No match at all means every metric in both directions.
    let p = set.policy(&MeshConfig::default(), "default", &app("off"));
    assert!(!p.server.metrics.enabled && !p.client.metrics.enabled);
}

#[test]
fn metrics_providers_and_reporting_interval() {
    let m = mesh(json!({"extensionProviders": [
        {"name": "sd", "stackdriver": {}},
        {"name": "prom2", "prometheus": {}}
    ]}));
    let set = Set::new(&[
        (
            "istio-system",
            "mesh",
            json!({"metrics": [{"reportingInterval": "10s"}]}),
        ),
        (
            "default",
            "w",
            json!({"selector": {"matchLabels": {"app": "a"}}, "metrics": [{"providers": [{"name": "sd"}]}]}),
        ),
        (
            "default",
            "w2",
            json!({"selector": {"matchLabels": {"app": "b"}}, "metrics": [{"providers": [{"name": "prom2"}], "reportingInterval": "3s"}]}),
        ),
    ]);
    let p = set.policy(&m, "default", &app("z"));
    assert!(p.client.metrics.enabled);
    assert_eq!(
        p.client
            .metrics
            .reporting_interval
            .map(|d| d.get().as_secs()),
        Some(10)
    );
    // The workload names only stackdriver: Prometheus is out of scope.
    let p = set.policy(&m, "default", &app("a"));
    assert!(!p.client.metrics.enabled);
    assert_eq!(p.client.metrics.ignored_providers, ["sd"]);
    let p = set.policy(&m, "default", &app("b"));
    assert!(p.server.metrics.enabled);
    assert_eq!(
        p.server
            .metrics
            .reporting_interval
            .map(|d| d.get().as_secs()),
        Some(3)
    );
    // defaultProviders.metrics without prometheus: no standard metrics.
    let m = mesh(json!({"defaultProviders": {"metrics": ["stackdriver"]}}));
    assert!(
        !Set::new(&[])
            .policy(&m, "default", &app("a"))
            .client
            .metrics
            .enabled
    );
}

fn tracing_mesh() -> MeshConfig {
    mesh(json!({
        "defaultConfig": {"tracing": {"sampling": 10.0}},
        "extensionProviders": [
            {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}},
            {"name": "otel", "opentelemetry": {"service": "otel.observability.svc.cluster.local", "port": 4317}},
            {"name": "dt", "opentelemetry": {"service": "dt.svc", "port": 443, "dynatraceSampler": {"tenant": "t"}}}
        ]
    }))
}

fn provider_name(t: &TracingPolicy) -> Option<&str> {
    match &t.provider {
        Some(TracingProvider::Extension(p)) => Some(&p.name),
        _ => None,
    }
}

#[test]
fn tracing_providers_modes_and_fields() {
    let set = Set::new(&[
        (
            "istio-system",
            "mesh",
            json!({"tracing": [{
                "providers": [{"name": "zipkin"}],
                "randomSamplingPercentage": 50.0,
                "customTags": {"env": {"literal": {"value": "prod"}}}
            }]}),
        ),
        (
            "default",
            "w",
            json!({"selector": {"matchLabels": {"app": "a"}}, "tracing": [
                {"match": {"mode": "CLIENT"}, "providers": [{"name": "otel"}], "useRequestIdForTraceSampling": false},
                {"match": {"mode": "SERVER"}, "disableSpanReporting": true, "enableIstioTags": false,
                 "customTags": {"rid": {"header": {"name": "x-request-id", "defaultValue": "none"}}}}
            ]}),
        ),
    ]);
    let m = tracing_mesh();
    let p = set.policy(&m, "default", &app("z"));
    assert_eq!(provider_name(&p.client.tracing), Some("zipkin"));
    assert!(p.server.tracing.is_active());
    assert_eq!(p.client.tracing.random_sampling_percentage, 50.0);
    assert_eq!(p.client.tracing.custom_tags.len(), 1);
    let p = set.policy(&m, "default", &app("a"));
    assert_eq!(provider_name(&p.client.tracing), Some("otel"));
    assert!(!p.client.tracing.use_request_id_for_trace_sampling);
    assert!(p.client.tracing.enable_istio_tags);
    assert_eq!(
        p.client.tracing.custom_tags.keys().collect::<Vec<_>>(),
        ["env"]
    );
    assert_eq!(provider_name(&p.server.tracing), Some("zipkin"));
    assert!(p.server.tracing.disable_span_reporting && !p.server.tracing.is_active());
    assert!(!p.server.tracing.enable_istio_tags);
    // customTags replace the inherited map.
    assert_eq!(
        p.server.tracing.custom_tags.keys().collect::<Vec<_>>(),
        ["rid"]
    );
    assert!(p.server.tracing.use_request_id_for_trace_sampling);
}

#[test]
fn tracing_sampling_and_fallbacks() {
    let m = tracing_mesh();
    // Unset randomSamplingPercentage: defaultConfig.tracing.sampling.
    let set = Set::new(&[(
        "istio-system",
        "mesh",
        json!({"tracing": [{"providers": [{"name": "otel"}]}]}),
    )]);
    assert_eq!(
        set.policy(&m, "a", &app("a"))
            .client
            .tracing
            .random_sampling_percentage,
        10.0
    );
    // No defaultConfig sampling: 1%.
    let bare = mesh(
        json!({"extensionProviders": [{"name": "otel", "opentelemetry": {"service": "o", "port": 4317}}]}),
    );
    assert_eq!(
        set.policy(&bare, "a", &app("a"))
            .client
            .tracing
            .random_sampling_percentage,
        1.0
    );
    // A provider with its own sampler samples everything.
    let set = Set::new(&[(
        "istio-system",
        "mesh",
        json!({"tracing": [{"providers": [{"name": "dt"}], "randomSamplingPercentage": 5.0}]}),
    )]);
    assert_eq!(
        set.policy(&m, "a", &app("a"))
            .server
            .tracing
            .random_sampling_percentage,
        100.0
    );
    // Unknown or non-tracing provider: no tracing.
    let set = Set::new(&[(
        "istio-system",
        "mesh",
        json!({"tracing": [{"providers": [{"name": "nope"}]}]}),
    )]);
    assert!(set
        .policy(&m, "a", &app("a"))
        .client
        .tracing
        .provider
        .is_none());
    let set = Set::new(&[(
        "istio-system",
        "mesh",
        json!({"tracing": [{"providers": [{"name": "prometheus"}]}]}),
    )]);
    assert!(set
        .policy(&m, "a", &app("a"))
        .client
        .tracing
        .provider
        .is_none());
    // defaultProviders.tracing: the first one, with no Telemetry at all.
    let dm = mesh(json!({
        "defaultProviders": {"tracing": ["zipkin", "otel"]},
        "extensionProviders": [{"name": "zipkin", "zipkin": {"service": "z", "port": 9411}}]
    }));
    let p = Set::new(&[]).policy(&dm, "a", &app("a"));
    assert_eq!(provider_name(&p.server.tracing), Some("zipkin"));
    // Telemetry sampling without providers keeps the default provider.
    let set = Set::new(&[(
        "a",
        "ns",
        json!({"tracing": [{"randomSamplingPercentage": 0.5}]}),
    )]);
    let p = set.policy(&dm, "a", &app("a"));
    assert_eq!(provider_name(&p.client.tracing), Some("zipkin"));
    assert_eq!(p.client.tracing.random_sampling_percentage, 0.5);
    // Legacy: no Telemetry tracing, no default provider.
    let legacy = mesh(
        json!({"defaultConfig": {"tracing": {"zipkin": {"address": "zipkin:9411"}, "sampling": 200.0}}}),
    );
    let p = Set::new(&[]).policy(&legacy, "a", &app("a"));
    assert!(matches!(
        p.client.tracing.provider,
        Some(TracingProvider::ProxyConfig(_))
    ));
    assert_eq!(p.client.tracing.random_sampling_percentage, 1.0);
    let mut off = legacy.clone();
    off.enable_tracing = Some(false);
    assert!(Set::new(&[])
        .policy(&off, "a", &app("a"))
        .client
        .tracing
        .provider
        .is_none());
}

fn log_names(p: &AccessLogPolicy) -> Vec<&str> {
    p.logs.iter().map(|l| l.provider.as_str()).collect()
}

fn logging_mesh() -> MeshConfig {
    mesh(json!({
        "accessLogFile": "/dev/stdout",
        "extensionProviders": [
            {"name": "json", "envoyFileAccessLog": {"path": "/dev/stderr", "logFormat": {"labels": {"code": "%RESPONSE_CODE%"}}}},
            {"name": "text", "envoyFileAccessLog": {"path": "/var/log/a", "logFormat": {"text": "%RESPONSE_CODE%\n"}}},
            {"name": "otel-logs", "envoyOtelAls": {"service": "otel.svc", "port": 4317}},
            {"name": "zipkin", "zipkin": {"service": "z", "port": 9411}}
        ]
    }))
}

#[test]
fn access_logging_providers_modes_disabled_and_filter() {
    let m = logging_mesh();
    let set = Set::new(&[
        (
            "istio-system",
            "mesh",
            json!({"accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
        (
            "default",
            "ns",
            json!({"accessLogging": [
                {"providers": [{"name": "json"}], "filter": {"expression": "response.code >= 400"}}
            ]}),
        ),
        (
            "default",
            "w",
            json!({"selector": {"matchLabels": {"app": "a"}}, "accessLogging": [
                {"match": {"mode": "CLIENT"}, "disabled": true},
                {"match": {"mode": "SERVER"}, "providers": [{"name": "text"}, {"name": "otel-logs"}]}
            ]}),
        ),
        (
            "default",
            "x",
            json!({"selector": {"matchLabels": {"app": "x"}}, "accessLogging": [
                {"match": {"mode": "SERVER"}, "providers": [{"name": "zipkin"}]}
            ]}),
        ),
    ]);
    let p = set.policy(&m, "other", &app("z"));
    assert_eq!(p.server.access_logs.source, AccessLogSource::Telemetry);
    assert_eq!(log_names(&p.server.access_logs), ["envoy"]);
    assert_eq!(
        p.server.access_logs.logs[0].sink,
        AccessLogSink::File {
            path: "/dev/stdout".into(),
            format: LogFormat::DefaultText
        }
    );
    // The namespace level replaces the providers and brings its filter.
    let p = set.policy(&m, "default", &app("z"));
    assert_eq!(log_names(&p.client.access_logs), ["json"]);
    let log = &p.client.access_logs.logs[0];
    assert!(matches!(
        &log.sink,
        AccessLogSink::File {
            format: LogFormat::Json(Some(_)),
            ..
        }
    ));
    let ok = Attributes {
        response: Response {
            code: Some(503),
            ..Response::default()
        },
        ..Attributes::default()
    };
    let fine = Attributes {
        response: Response {
            code: Some(200),
            ..Response::default()
        },
        ..Attributes::default()
    };
    assert!(log.selects(&ok) && !log.selects(&fine));
    // Workload: client logs off (inherits "json", disabled); server uses
    // its own two providers, without the namespace's filter, by name.
    let p = set.policy(&m, "default", &app("a"));
    assert_eq!(p.client.access_logs.source, AccessLogSource::Telemetry);
    assert!(p.client.access_logs.logs.is_empty());
    assert_eq!(log_names(&p.server.access_logs), ["otel-logs", "text"]);
    assert!(p.server.access_logs.logs.iter().all(|l| l.filter.is_none()));
    assert!(matches!(
        p.server.access_logs.logs[0].sink,
        AccessLogSink::OpenTelemetry(_)
    ));
    // A provider that cannot log leaves nothing: MeshConfig decides again.
    let p = set.policy(&m, "default", &app("x"));
    assert_eq!(p.server.access_logs.source, AccessLogSource::MeshConfig);
    assert_eq!(log_names(&p.server.access_logs), [""]);
    assert_eq!(log_names(&p.client.access_logs), ["json"]);
}

#[test]
fn access_logging_defaults_and_providerless_filter() {
    let m = mesh(json!({"defaultProviders": {"accessLogging": ["envoy"]}, "accessLogFile": "/x"}));
    // defaultProviders.accessLogging replaces MeshConfig's accessLogFile.
    let p = Set::new(&[]).policy(&m, "a", &app("a"));
    assert_eq!(p.client.access_logs.source, AccessLogSource::Telemetry);
    assert_eq!(log_names(&p.client.access_logs), ["envoy"]);
    // istiod applies a filter only for providers an entry names.
    let set = Set::new(&[(
        "a",
        "ns",
        json!({"accessLogging": [{"filter": {"expression": "response.code >= 500"}}]}),
    )]);
    let p = set.policy(&m, "a", &app("a"));
    assert_eq!(log_names(&p.server.access_logs), ["envoy"]);
    assert!(p.server.access_logs.logs[0].filter.is_none());
    let set = Set::new(&[(
        "a",
        "ns",
        json!({"accessLogging": [
            {"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 500"}}
        ]}),
    )]);
    let p = set.policy(&m, "a", &app("a"));
    assert_eq!(
        p.server.access_logs.logs[0]
            .filter
            .as_ref()
            .map(|f| f.source()),
        Some("response.code >= 500")
    );
    // Disabled everywhere: no log, and no fall back to accessLogFile.
    let set = Set::new(&[("a", "ns", json!({"accessLogging": [{"disabled": true}]}))]);
    let p = set.policy(&m, "a", &app("a"));
    assert_eq!(p.server.access_logs.source, AccessLogSource::Telemetry);
    assert!(p.server.access_logs.logs.is_empty());
}

#[test]
fn policy_serializes_and_compares() {
    let set = Set::new(&[(
        "istio-system",
        "mesh",
        json!({"metrics": [{"overrides": [
            {"tagOverrides": {"h": {"value": "request.host"}}}
        ]}]}),
    )]);
    let a = set.policy(&MeshConfig::default(), "d", &app("a"));
    let b = set.policy(&MeshConfig::default(), "d", &app("a"));
    assert_eq!(a, b);
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(
        v["client"]["metrics"]["metrics"]["REQUEST_COUNT"]["tags"]["h"]["upsert"],
        "request.host"
    );
    assert_ne!(
        a,
        Set::new(&[]).policy(&MeshConfig::default(), "d", &app("a"))
    );
}
