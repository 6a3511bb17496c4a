//! MeshConfig `extensionProviders` and `defaultProviders`: the external
//! authorizers, tracers, metrics sinks and access loggers that
//! AuthorizationPolicy (`CUSTOM`) and Telemetry refer to by name.
//!
//! The commonly used providers are typed; the deprecated or rarely used ones
//! (lightstep, opencensus, stackdriver, the Envoy gRPC ALS pair) are kept as
//! JSON values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::common::Duration;
use crate::config::validate::{check_port, field, Issues, Validate};

/// Provider names Istio's default mesh config always defines (a user entry
/// with the same name replaces the built-in one).
pub const BUILTIN_PROVIDERS: [&str; 3] = ["prometheus", "stackdriver", "envoy"];

/// Istio's `MeshConfig.ExtensionProvider`: a name and exactly one provider.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Unique name other resources refer to.
    #[serde(default)]
    pub name: String,
    /// Envoy ext_authz over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<EnvoyExtAuthzHttpProvider>,
    /// Envoy ext_authz over gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<EnvoyExtAuthzGrpcProvider>,
    /// Zipkin tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinProvider>,
    /// Lightstep tracer (deprecated), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<serde_json::Value>,
    /// Datadog tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<ServicePortProvider>,
    /// Stackdriver (Google Cloud) telemetry, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<serde_json::Value>,
    /// OpenCensus agent tracer (deprecated), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencensus: Option<serde_json::Value>,
    /// Apache SkyWalking tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<SkyWalkingProvider>,
    /// OpenTelemetry (OTLP) tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryProvider>,
    /// Prometheus metrics (no settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProvider>,
    /// Access logs to a local file or stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    /// Envoy gRPC access log service for HTTP, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_http_als: Option<serde_json::Value>,
    /// Envoy gRPC access log service for TCP, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_tcp_als: Option<serde_json::Value>,
    /// OpenTelemetry access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_otel_als: Option<EnvoyOtelAlsProvider>,
}

/// Which provider an [`ExtensionProvider`] configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// `envoyExtAuthzHttp`.
    EnvoyExtAuthzHttp,
    /// `envoyExtAuthzGrpc`.
    EnvoyExtAuthzGrpc,
    /// `zipkin`.
    Zipkin,
    /// `lightstep`.
    Lightstep,
    /// `datadog`.
    Datadog,
    /// `stackdriver`.
    Stackdriver,
    /// `opencensus`.
    OpenCensus,
    /// `skywalking`.
    SkyWalking,
    /// `opentelemetry`.
    OpenTelemetry,
    /// `prometheus`.
    Prometheus,
    /// `envoyFileAccessLog`.
    EnvoyFileAccessLog,
    /// `envoyHttpAls`.
    EnvoyHttpAls,
    /// `envoyTcpAls`.
    EnvoyTcpAls,
    /// `envoyOtelAls`.
    EnvoyOtelAls,
}

impl ProviderKind {
    /// True for the external authorizers usable by a CUSTOM AuthorizationPolicy.
    pub fn is_ext_authz(self) -> bool {
        matches!(
            self,
            ProviderKind::EnvoyExtAuthzHttp | ProviderKind::EnvoyExtAuthzGrpc
        )
    }

    /// True for tracing providers.
    pub fn is_tracing(self) -> bool {
        matches!(
            self,
            ProviderKind::Zipkin
                | ProviderKind::Lightstep
                | ProviderKind::Datadog
                | ProviderKind::Stackdriver
                | ProviderKind::OpenCensus
                | ProviderKind::SkyWalking
                | ProviderKind::OpenTelemetry
        )
    }

    /// True for access-logging providers.
    pub fn is_access_log(self) -> bool {
        matches!(
            self,
            ProviderKind::EnvoyFileAccessLog
                | ProviderKind::EnvoyHttpAls
                | ProviderKind::EnvoyTcpAls
                | ProviderKind::EnvoyOtelAls
                | ProviderKind::Stackdriver
        )
    }

    /// True for metrics providers.
    pub fn is_metrics(self) -> bool {
        matches!(self, ProviderKind::Prometheus | ProviderKind::Stackdriver)
    }
}

impl ExtensionProvider {
    /// Every provider kind that is set (a valid provider has exactly one).
    pub fn kinds(&self) -> Vec<ProviderKind> {
        use ProviderKind as K;
        [
            (self.envoy_ext_authz_http.is_some(), K::EnvoyExtAuthzHttp),
            (self.envoy_ext_authz_grpc.is_some(), K::EnvoyExtAuthzGrpc),
            (self.zipkin.is_some(), K::Zipkin),
            (self.lightstep.is_some(), K::Lightstep),
            (self.datadog.is_some(), K::Datadog),
            (self.stackdriver.is_some(), K::Stackdriver),
            (self.opencensus.is_some(), K::OpenCensus),
            (self.skywalking.is_some(), K::SkyWalking),
            (self.opentelemetry.is_some(), K::OpenTelemetry),
            (self.prometheus.is_some(), K::Prometheus),
            (self.envoy_file_access_log.is_some(), K::EnvoyFileAccessLog),
            (self.envoy_http_als.is_some(), K::EnvoyHttpAls),
            (self.envoy_tcp_als.is_some(), K::EnvoyTcpAls),
            (self.envoy_otel_als.is_some(), K::EnvoyOtelAls),
        ]
        .into_iter()
        .filter_map(|(set, k)| set.then_some(k))
        .collect()
    }

    /// The provider kind, when exactly one is set.
    pub fn kind(&self) -> Option<ProviderKind> {
        match self.kinds().as_slice() {
            [k] => Some(*k),
            _ => None,
        }
    }

    /// The backing service and port, for the typed providers that have one.
    pub fn service_port(&self) -> Option<(&str, u32)> {
        let candidates: [Option<(&String, u32)>; 7] = [
            self.envoy_ext_authz_http
                .as_ref()
                .map(|p| (&p.service, p.port)),
            self.envoy_ext_authz_grpc
                .as_ref()
                .map(|p| (&p.service, p.port)),
            self.zipkin.as_ref().map(|p| (&p.service, p.port)),
            self.datadog.as_ref().map(|p| (&p.service, p.port)),
            self.skywalking.as_ref().map(|p| (&p.service, p.port)),
            self.opentelemetry.as_ref().map(|p| (&p.service, p.port)),
            self.envoy_otel_als.as_ref().map(|p| (&p.service, p.port)),
        ];
        candidates
            .into_iter()
            .flatten()
            .next()
            .map(|(s, p)| (s.as_str(), p))
    }
}

/// Istio's `EnvoyExternalAuthorizationHttpProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExtAuthzHttpProvider {
    /// `[<namespace>/]<hostname>` of the authorizer.
    #[serde(default)]
    pub service: String,
    /// Port of the authorizer.
    #[serde(default)]
    pub port: u32,
    /// Per-check timeout (default 600s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Prefix added to the check request's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Allow the request when the authorizer fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// HTTP status returned when the authorizer is unreachable (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    /// Deprecated: use `includeRequestHeadersInCheck`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    /// Client request headers sent to the authorizer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    /// Fixed headers added to the check request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Send (part of) the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
    /// Authorizer response headers copied upstream on allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Authorizer response headers returned downstream on deny.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Authorizer response headers returned downstream on allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// Istio's `EnvoyExternalAuthorizationGrpcProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExtAuthzGrpcProvider {
    /// `[<namespace>/]<hostname>` of the authorizer.
    #[serde(default)]
    pub service: String,
    /// Port of the authorizer.
    #[serde(default)]
    pub port: u32,
    /// Per-check timeout (default 600s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Allow the request when the authorizer fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// HTTP status returned when the authorizer is unreachable (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    /// Send (part of) the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
}

/// Istio's `EnvoyExternalAuthorizationRequestBody`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzRequestBody {
    /// Maximum body bytes buffered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u32>,
    /// Send a partial body instead of failing with 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_partial_message: Option<bool>,
    /// Send the body as raw bytes (gRPC only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_as_bytes: Option<bool>,
}

/// Istio's `ZipkinTracingProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinProvider {
    /// `[<namespace>/]<hostname>` of the collector.
    #[serde(default)]
    pub service: String,
    /// Port of the collector.
    #[serde(default)]
    pub port: u32,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// Use 64-bit trace IDs instead of 128-bit.
    #[serde(
        default,
        rename = "enable64bitTraceId",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_64bit_trace_id: Option<bool>,
    /// Context propagation (`USE_B3`, `USE_B3_WITH_W3C_PROPAGATION`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context_option: Option<String>,
}

/// A provider with only a service, a port and an optional tag length
/// (Istio's `DatadogTracingProvider`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePortProvider {
    /// `[<namespace>/]<hostname>` of the backend.
    #[serde(default)]
    pub service: String,
    /// Port of the backend.
    #[serde(default)]
    pub port: u32,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
}

/// Istio's `SkyWalkingTracingProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkyWalkingProvider {
    /// `[<namespace>/]<hostname>` of the receiver.
    #[serde(default)]
    pub service: String,
    /// Port of the receiver.
    #[serde(default)]
    pub port: u32,
    /// OAP access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// Istio's `OpenTelemetryTracingProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTelemetryProvider {
    /// `[<namespace>/]<hostname>` of the OTLP endpoint.
    #[serde(default)]
    pub service: String,
    /// Port of the OTLP endpoint.
    #[serde(default)]
    pub port: u32,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// Export over HTTP instead of gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpService>,
    /// Resource detectors (`environment`, `dynatrace`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<serde_json::Value>,
    /// Dynatrace sampler settings, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynatrace_sampler: Option<serde_json::Value>,
}

/// Istio's `HttpService` (OTLP over HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpService {
    /// Request path, e.g. `/v1/traces`.
    #[serde(default)]
    pub path: String,
    /// Request timeout (default 3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Header value.
    #[serde(default)]
    pub value: String,
}

/// Istio's `PrometheusMetricsProvider` (no settings).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProvider {}

/// Istio's `EnvoyFileAccessLogProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFileAccessLogProvider {
    /// File or stream (default `/dev/stdout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Text or JSON format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<AccessLogFormat>,
}

/// An access log format: `text` or `labels` (JSON), one of them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFormat {
    /// Envoy format string, e.g. `%RESPONSE_CODE% %REQ(:path)%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// JSON format: field name to Envoy command operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Istio's `EnvoyOpenTelemetryLogProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyOtelAlsProvider {
    /// `[<namespace>/]<hostname>` of the collector.
    #[serde(default)]
    pub service: String,
    /// Port of the collector.
    #[serde(default)]
    pub port: u32,
    /// Log name (default `otel_envoy_accesslog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_name: Option<String>,
    /// Body text and attributes; here `text` and `labels` may both be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<AccessLogFormat>,
}

/// Istio's `MeshConfig.DefaultProviders`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    /// Default tracing providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// Default metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Default access logging providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

fn check_service_port(service: &str, port: u32, path: &str, issues: &mut Issues) {
    let svc = field(path, "service");
    if service.is_empty() {
        issues.push(
            &svc,
            "service is required; give [<namespace>/]<hostname> of a Service or ServiceEntry, e.g. my-authz.foo.svc.cluster.local",
        );
    } else if service.chars().any(char::is_whitespace) || service.matches('/').count() > 1 {
        issues.push(
            &svc,
            format!("service {service:?} is not [<namespace>/]<hostname>; e.g. foo/my-authz.foo.svc.cluster.local"),
        );
    }
    check_port(port, &field(path, "port"), issues);
}

fn check_status(status: &Option<String>, path: &str, issues: &mut Issues) {
    if let Some(s) = status {
        if !s.parse::<u16>().is_ok_and(|c| (200..=599).contains(&c)) {
            issues.push(
                field(path, "statusOnError"),
                format!("statusOnError {s:?} is not an HTTP status code; use a number from 200 to 599 such as \"403\""),
            );
        }
    }
}

impl Validate for ExtensionProvider {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.name.trim().is_empty() {
            issues.push(field(path, "name"), "extension provider name is required");
        }
        let kinds = self.kinds();
        if kinds.len() != 1 {
            issues.push(
                path,
                format!(
                    "an extension provider needs exactly one provider (envoyExtAuthzHttp, envoyExtAuthzGrpc, zipkin, opentelemetry, prometheus, envoyFileAccessLog, ...), but {} are set",
                    kinds.len()
                ),
            );
        }
        if let Some(p) = &self.envoy_ext_authz_http {
            let pp = field(path, "envoyExtAuthzHttp");
            check_service_port(&p.service, p.port, &pp, issues);
            check_status(&p.status_on_error, &pp, issues);
            if let Some(t) = p.timeout {
                t.check_ms(&field(&pp, "timeout"), issues);
            }
            if let Some(prefix) = &p.path_prefix {
                if !prefix.starts_with('/') {
                    issues.push(
                        field(&pp, "pathPrefix"),
                        format!("pathPrefix {prefix:?} must start with '/', e.g. /check"),
                    );
                }
            }
        }
        if let Some(p) = &self.envoy_ext_authz_grpc {
            let pp = field(path, "envoyExtAuthzGrpc");
            check_service_port(&p.service, p.port, &pp, issues);
            check_status(&p.status_on_error, &pp, issues);
            if let Some(t) = p.timeout {
                t.check_ms(&field(&pp, "timeout"), issues);
            }
        }
        if let Some(p) = &self.zipkin {
            check_service_port(&p.service, p.port, &field(path, "zipkin"), issues);
        }
        if let Some(p) = &self.datadog {
            check_service_port(&p.service, p.port, &field(path, "datadog"), issues);
        }
        if let Some(p) = &self.skywalking {
            check_service_port(&p.service, p.port, &field(path, "skywalking"), issues);
        }
        if let Some(p) = &self.opentelemetry {
            let pp = field(path, "opentelemetry");
            check_service_port(&p.service, p.port, &pp, issues);
            if let Some(h) = &p.http {
                let hp = field(&pp, "http");
                if !h.path.starts_with('/') {
                    issues.push(
                        field(&hp, "path"),
                        "http.path is required and must start with '/', e.g. /v1/traces",
                    );
                }
                if let Some(t) = h.timeout {
                    t.check_ms(&field(&hp, "timeout"), issues);
                }
                for (i, hd) in h.headers.iter().enumerate() {
                    if hd.name.is_empty() {
                        issues.push(
                            format!("{}[{i}].name", field(&hp, "headers")),
                            "header name is required",
                        );
                    }
                }
            }
        }
        if let Some(p) = &self.envoy_otel_als {
            check_service_port(&p.service, p.port, &field(path, "envoyOtelAls"), issues);
        }
        if let Some(AccessLogFormat {
            text: Some(_),
            labels: Some(_),
        }) = self
            .envoy_file_access_log
            .as_ref()
            .and_then(|p| p.log_format.as_ref())
        {
            issues.push(
                field(&field(path, "envoyFileAccessLog"), "logFormat"),
                "logFormat takes text or labels, not both; use labels for JSON logs",
            );
        }
    }
}
