//! Tests of MeshConfig deserialization, defaults and validation.

use super::providers::*;
use super::*;
use serde_json::json;

fn parse(v: serde_json::Value) -> MeshConfig {
    serde_json::from_value(v).unwrap()
}

fn errors(m: &MeshConfig) -> Vec<(String, String)> {
    let mut issues = Issues::new();
    m.validate("", &mut issues);
    issues
        .errors()
        .iter()
        .map(|e| (e.path.clone(), e.message.clone()))
        .collect()
}

fn paths(m: &MeshConfig) -> Vec<String> {
    errors(m).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn defaults_when_empty() {
    let m = parse(json!({}));
    assert_eq!(m.root_namespace(), "istio-system");
    assert_eq!(m.trust_domain(), "cluster.local");
    assert_eq!(m.trust_domains(), vec!["cluster.local"]);
    assert_eq!(m.path_normalization(), PathNormalizationKind::Base);
    assert_eq!(
        m.outbound_policy_mode(),
        OutboundTrafficPolicyMode::AllowAny
    );
    assert!(m.auto_mtls());
    assert!(m.tracing_enabled());
    assert_eq!(m.connect_timeout(), Duration::from_secs(10));
    assert_eq!(m.service_export_to(), vec!["*"]);
    assert!(m.has_provider("prometheus") && m.has_provider("envoy"));
    assert!(!m.has_provider("zipkin"));
    assert!(paths(&m).is_empty());
    assert_eq!(m, MeshConfig::default());
}

#[test]
fn parses_realistic_mesh_config() {
    let providers = json!([
        {"name": "ext-authz", "envoyExtAuthzHttp": {
            "service": "ext-authz.foo.svc.cluster.local", "port": 8000,
            "timeout": "2s", "pathPrefix": "/check", "failOpen": false, "statusOnError": "503",
            "includeRequestHeadersInCheck": ["x-ext-authz"],
            "includeAdditionalHeadersInCheck": {"x-source": "mesh"},
            "includeRequestBodyInCheck": {"maxRequestBytes": 1024, "allowPartialMessage": true},
            "headersToUpstreamOnAllow": ["x-user"],
            "headersToDownstreamOnDeny": ["x-reason"]
        }},
        {"name": "ext-authz-grpc", "envoyExtAuthzGrpc": {"service": "foo/authz.example.com", "port": 9000}},
        {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411, "maxTagLength": 56, "enable64bitTraceId": true}},
        {"name": "otel", "opentelemetry": {
            "service": "otel.observability.svc.cluster.local", "port": 4317,
            "http": {"path": "/v1/traces", "timeout": "3s", "headers": [{"name": "x-key", "value": "v"}]},
            "resourceDetectors": {"environment": {}}
        }},
        {"name": "prom", "prometheus": {}},
        {"name": "json-log", "envoyFileAccessLog": {"path": "/dev/stdout", "logFormat": {"labels": {"code": "%RESPONSE_CODE%"}}}},
        {"name": "otel-als", "envoyOtelAls": {"service": "otel.observability.svc.cluster.local", "port": 4317, "logFormat": {"text": "%REQ(:path)%", "labels": {"a": "b"}}}},
        {"name": "sky", "skywalking": {"service": "sky.svc", "port": 11800, "accessToken": "t"}},
        {"name": "dd", "datadog": {"service": "dd.svc", "port": 8126}},
        {"name": "als", "envoyHttpAls": {"service": "als.svc", "port": 9000, "logName": "x"}},
        {"name": "sd", "stackdriver": {"maxTagLength": 100}}
    ]);
    let mut v = json!({
        "rootNamespace": "mesh-root",
        "trustDomain": "example.org",
        "trustDomainAliases": ["old.example.org"],
        "accessLogFile": "/dev/stdout",
        "accessLogEncoding": "JSON",
        "enableTracing": false,
        "enableAutoMtls": false,
        "enablePrometheusMerge": true,
        "connectTimeout": "5s",
        "protocolDetectionTimeout": "0s",
        "dnsRefreshRate": "30s",
        "h2UpgradePolicy": "UPGRADE",
        "ingressControllerMode": "STRICT",
        "ingressClass": "istio",
        "defaultServiceExportTo": ["."],
        "defaultVirtualServiceExportTo": ["*"],
        "defaultDestinationRuleExportTo": ["~"],
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        "inboundTrafficPolicy": {"mode": "LOCALHOST"},
        "pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"},
        "localityLbSetting": {"enabled": true},
        "defaultHttpRetryPolicy": {"attempts": 2},
        "meshMTLS": {"minProtocolVersion": "TLSV1_3"},
        "tlsDefaults": {"ecdhCurves": ["P-256"], "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]},
        "caCertificates": [{"pem": "-----BEGIN CERTIFICATE-----", "trustDomains": ["example.org"]}],
        "discoverySelectors": [{"matchLabels": {"env": "prod"}}],
        "defaultConfig": {
            "discoveryAddress": "istiod.istio-system.svc:15012",
            "holdApplicationUntilProxyStarts": true,
            "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"},
            "tracing": {"sampling": 10},
            "image": {"imageType": "distroless"}
        },
        "defaultProviders": {"tracing": ["zipkin"], "metrics": ["prometheus"], "accessLogging": ["envoy", "json-log"]}
    });
    v["extensionProviders"] = providers;
    let m = parse(v);
    assert_eq!(m.root_namespace(), "mesh-root");
    assert_eq!(m.trust_domains(), vec!["example.org", "old.example.org"]);
    assert_eq!(
        m.path_normalization(),
        PathNormalizationKind::DecodeAndMergeSlashes
    );
    assert_eq!(
        m.outbound_policy_mode(),
        OutboundTrafficPolicyMode::RegistryOnly
    );
    assert!(m.registry_only());
    assert!(!m.auto_mtls());
    assert!(!m.tracing_enabled());
    assert_eq!(m.service_export_to(), vec!["."]);
    assert_eq!(
        m.mesh_mtls.as_ref().and_then(|t| t.min_protocol_version),
        Some(TlsProtocol::V1_3)
    );
    let pc = m.default_config.as_ref().unwrap();
    assert_eq!(pc.hold_application_until_proxy_starts, Some(true));
    assert!(pc.other.contains_key("image"));
    let authz = m.extension_provider("ext-authz").unwrap();
    assert_eq!(authz.kind(), Some(ProviderKind::EnvoyExtAuthzHttp));
    assert!(authz.kind().is_some_and(ProviderKind::is_ext_authz));
    assert_eq!(
        authz.service_port(),
        Some(("ext-authz.foo.svc.cluster.local", 8000))
    );
    assert_eq!(
        m.extension_provider("zipkin")
            .and_then(|p| p.zipkin.as_ref())
            .and_then(|z| z.enable_64bit_trace_id),
        Some(true)
    );
    assert!(m
        .extension_provider("otel")
        .and_then(|p| p.kind())
        .is_some_and(ProviderKind::is_tracing));
    assert!(m.has_provider("json-log"));
    assert!(paths(&m).is_empty(), "{:?}", errors(&m));
    let back = parse(serde_json::to_value(&m).unwrap());
    assert_eq!(back, m);
}

#[test]
fn rejects_unknown_fields() {
    for bad in [
        json!({"rootNamespce": "x"}),
        json!({"outboundTrafficPolicy": {"mode": "ALLOW_ALL"}}),
        json!({"pathNormalization": {"normalisation": "BASE"}}),
        json!({"extensionProviders": [{"name": "x", "zipkn": {}}]}),
        json!({"extensionProviders": [{"name": "x", "zipkin": {"service": "a", "port": 1, "host": "b"}}]}),
        json!({"extensionProviders": [{"name": "x", "prometheus": {"port": 1}}]}),
        json!({"defaultProviders": {"logging": []}}),
    ] {
        assert!(
            serde_json::from_value::<MeshConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn default_normalization_is_base() {
    let m = parse(json!({"pathNormalization": {"normalization": "DEFAULT"}}));
    assert_eq!(m.path_normalization(), PathNormalizationKind::Base);
    let m = parse(json!({"pathNormalization": {}}));
    assert_eq!(m.path_normalization(), PathNormalizationKind::Base);
    let m = parse(json!({"pathNormalization": {"normalization": "NONE"}}));
    assert_eq!(m.path_normalization(), PathNormalizationKind::None);
    let m = parse(json!({"pathNormalization": {"normalization": "MERGE_SLASHES"}}));
    assert_eq!(m.path_normalization(), PathNormalizationKind::MergeSlashes);
}

#[test]
fn trust_domain_and_root_namespace_rules() {
    let m = parse(json!({
        "trustDomain": "",
        "rootNamespace": "",
        "trustDomainAliases": ["Bad.Domain", "a..b", "ok_domain.local"]
    }));
    assert_eq!(
        paths(&m),
        vec![
            "rootNamespace",
            "trustDomain",
            "trustDomainAliases[0]",
            "trustDomainAliases[1]"
        ]
    );
    // The accessors still fall back to the defaults.
    assert_eq!(m.trust_domain(), "cluster.local");
    assert_eq!(m.root_namespace(), "istio-system");
    let msgs = errors(&m);
    assert!(msgs[1].1.contains("cluster.local"), "{}", msgs[1].1);
    assert!(check_trust_domain("spiffe://x").is_err());
    assert!(check_trust_domain("td1").is_ok());
}

#[test]
fn durations_and_ports() {
    let m = parse(json!({
        "connectTimeout": "0s",
        "protocolDetectionTimeout": "0s",
        "dnsRefreshRate": "100us",
        "proxyListenPort": 0,
        "proxyInboundListenPort": 15006
    }));
    assert_eq!(
        paths(&m),
        vec!["proxyListenPort", "connectTimeout", "dnsRefreshRate"]
    );
}

#[test]
fn extension_provider_rules() {
    let m = parse(json!({
        "extensionProviders": [
            {"name": "", "prometheus": {}},
            {"name": "two", "prometheus": {}, "zipkin": {"service": "z", "port": 9411}},
            {"name": "none"},
            {"name": "authz", "envoyExtAuthzHttp": {"service": "", "port": 0, "statusOnError": "forbidden", "pathPrefix": "check"}},
            {"name": "authz", "envoyExtAuthzGrpc": {"service": "a b", "port": 9000, "timeout": "0s"}},
            {"name": "otel", "opentelemetry": {"service": "o", "port": 4317, "http": {"path": ""}}},
            {"name": "log", "envoyFileAccessLog": {"logFormat": {"text": "x", "labels": {}}}}
        ],
        "defaultProviders": {"tracing": ["missing"], "metrics": ["prometheus"], "accessLogging": ["log", "nope"]}
    }));
    assert_eq!(
        paths(&m),
        vec![
            "extensionProviders[0].name",
            "extensionProviders[1]",
            "extensionProviders[2]",
            "extensionProviders[3].envoyExtAuthzHttp.service",
            "extensionProviders[3].envoyExtAuthzHttp.port",
            "extensionProviders[3].envoyExtAuthzHttp.statusOnError",
            "extensionProviders[3].envoyExtAuthzHttp.pathPrefix",
            "extensionProviders[4].envoyExtAuthzGrpc.service",
            "extensionProviders[4].envoyExtAuthzGrpc.timeout",
            "extensionProviders[5].opentelemetry.http.path",
            "extensionProviders[6].envoyFileAccessLog.logFormat",
            "extensionProviders[4].name",
            "defaultProviders.tracing[0]",
            "defaultProviders.accessLogging[1]",
        ]
    );
    assert_eq!(m.extension_providers[1].kind(), None);
    assert_eq!(m.extension_providers[1].kinds().len(), 2);
}

#[test]
fn validation_paths_under_a_prefix() {
    let m = parse(json!({"trustDomain": "A"}));
    let mut issues = Issues::new();
    m.validate("mesh", &mut issues);
    assert_eq!(issues.errors()[0].path, "mesh.trustDomain");
}
