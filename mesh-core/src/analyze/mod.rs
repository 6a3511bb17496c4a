//! The analyzer behind `meshctl analyze`: checks a set of resources for the
//! configurations behind most Istio outages and security holes.
//!
//! Each check lives in the module of the kind it inspects and reports
//! [`Finding`]s with a stable code (see [`CODES`]), a severity, the resource,
//! where it was written and a message that says why it matters and how to
//! fix it. The analyzer never rejects config by itself: `config-invalid`
//! findings come from the loader and validation.

mod authz;
mod context;
mod destination_rule;
mod gateway;
mod service;
mod sidecar;
mod virtual_service;
mod workload;

use serde::Serialize;

pub use context::Context;

use crate::config::load::LoadResult;
use crate::config::{MeshConfig, Resource};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config is wrong or will break traffic; `analyze` exits 1.
    Error,
    /// Likely a mistake, or a known source of outages or bypasses.
    Warning,
    /// Worth knowing; often intended.
    Info,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One thing the analyzer found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code, one of [`CODES`].
    pub code: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// `Kind/namespace/name`, or empty when the problem is not in one resource.
    pub resource: String,
    /// File the resource was read from.
    pub file: String,
    /// Line in that file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Why it matters and how to fix it.
    pub message: String,
}

impl Finding {
    /// A finding about `resource`, located at the field `path` of it (or at
    /// the resource itself when `path` is empty).
    pub fn at(
        code: &'static str,
        resource: &Resource,
        path: &str,
        message: impl Into<String>,
    ) -> Self {
        let severity = severity_of(code);
        Self {
            code,
            severity,
            resource: resource.key(),
            file: resource.origin.file.clone(),
            line: Some(if path.is_empty() {
                resource.origin.line
            } else {
                resource.origin.line_of(path)
            }),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.severity, self.code)?;
        if !self.resource.is_empty() {
            write!(f, " {}", self.resource)?;
        }
        if !self.file.is_empty() {
            write!(f, " ({}", self.file)?;
            if let Some(l) = self.line {
                write!(f, ":{l}")?;
            }
            f.write_str(")")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every code the analyzer emits, with its severity and a one-line summary.
pub const CODES: &[(&str, Severity, &str)] = &[
    (
        "config-invalid",
        Severity::Error,
        "unparsable YAML, unknown kind or field, or failed validation",
    ),
    (
        "authz-allow-all-rule",
        Severity::Warning,
        "an ALLOW policy has an empty rule that allows everything",
    ),
    (
        "authz-deny-all",
        Severity::Info,
        "a policy with no rules denies every request to what it selects",
    ),
    (
        "authz-http-fields-on-tcp",
        Severity::Warning,
        "HTTP-only fields in a rule that applies to a non-HTTP port",
    ),
    (
        "authz-hosts-on-sidecar",
        Severity::Warning,
        "hosts/notHosts in a policy enforced on workloads, not a gateway",
    ),
    (
        "authz-permissive-plaintext",
        Severity::Warning,
        "an ALLOW rule without source identity on a PERMISSIVE/DISABLE workload",
    ),
    (
        "authz-deny-paths-unnormalized",
        Severity::Warning,
        "a DENY rule on paths while path normalization is NONE or BASE",
    ),
    (
        "authz-allow-not-paths",
        Severity::Warning,
        "an ALLOW rule uses notPaths",
    ),
    (
        "vs-fault-with-retry",
        Severity::Warning,
        "fault injection together with retries or timeout",
    ),
    (
        "vs-timeout-below-retries",
        Severity::Warning,
        "route timeout <= attempts x perTryTimeout",
    ),
    (
        "vs-retriable-4xx",
        Severity::Warning,
        "retryOn contains retriable-4xx",
    ),
    (
        "vs-unknown-subset",
        Severity::Error,
        "a destination or mirror names a subset no visible DestinationRule defines",
    ),
    (
        "vs-unreachable-rule",
        Severity::Warning,
        "a rule or match can never be reached",
    ),
    (
        "dr-namespace-ignored",
        Severity::Warning,
        "a DestinationRule in a namespace that is neither its host's nor the root",
    ),
    (
        "dr-failover-without-outlier",
        Severity::Warning,
        "locality failover without outlierDetection",
    ),
    (
        "dr-deprecated-consecutive-errors",
        Severity::Warning,
        "consecutiveErrors instead of consecutive5xxErrors",
    ),
    (
        "dr-ejects-all",
        Severity::Warning,
        "maxEjectionPercent 100 with minHealthPercent 0 or unset",
    ),
    (
        "dr-tls-mesh-host",
        Severity::Warning,
        "trafficPolicy.tls set for an in-mesh host",
    ),
    (
        "dr-tls-no-san",
        Severity::Warning,
        "SIMPLE/MUTUAL origination without subjectAltNames",
    ),
    (
        "gateway-conflict",
        Severity::Warning,
        "two Gateways with the same selector bind the same port and host",
    ),
    (
        "sidecar-multiple-default",
        Severity::Error,
        "more than one Sidecar without workloadSelector in a namespace",
    ),
    (
        "service-port-protocol-unknown",
        Severity::Warning,
        "a Service port declares no protocol",
    ),
    (
        "workload-uid-1337",
        Severity::Error,
        "a container runs as UID 1337, the proxy's UID",
    ),
    (
        "api-version-deprecated",
        Severity::Info,
        "v1alpha3/v1beta1 used where v1 exists",
    ),
];

/// An enum value as users write it in YAML (`ISTIO_MUTUAL`, not `IstioMutual`).
pub(crate) fn yaml_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::from("?"),
    }
}

/// The severity registered for `code`.
pub fn severity_of(code: &str) -> Severity {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, s, _)| *s)
        .unwrap_or(Severity::Warning)
}

/// Analyzes what was loaded: load and validation errors become
/// `config-invalid`, then every check runs over the valid resources.
/// Findings come sorted by file, line and code, so output is stable.
pub fn analyze(load: &LoadResult, mesh: &MeshConfig) -> Vec<Finding> {
    let mut findings: Vec<Finding> = load
        .errors
        .iter()
        .map(|e| Finding {
            code: "config-invalid",
            severity: Severity::Error,
            resource: e.resource.clone().unwrap_or_default(),
            file: e.file.clone(),
            line: e.line,
            message: match &e.field {
                Some(f) => format!("field {f}: {}", e.message),
                None => e.message.clone(),
            },
        })
        .collect();
    for d in &load.deprecated_api_versions {
        findings.push(Finding {
            code: "api-version-deprecated",
            severity: Severity::Info,
            resource: d.resource.clone(),
            file: d.file.clone(),
            line: Some(d.line),
            message: format!(
                "apiVersion {} is deprecated; use {} (same schema, nothing else to change)",
                d.api_version, d.current
            ),
        });
    }
    let ctx = Context::new(&load.resources, mesh);
    authz::check(&ctx, &mut findings);
    virtual_service::check(&ctx, &mut findings);
    destination_rule::check(&ctx, &mut findings);
    gateway::check(&ctx, &mut findings);
    sidecar::check(&ctx, &mut findings);
    service::check(&ctx, &mut findings);
    workload::check(&ctx, &mut findings);
    findings.sort_by(|a, b| {
        (&a.file, a.line, a.code, &a.resource).cmp(&(&b.file, b.line, b.code, &b.resource))
    });
    findings.dedup();
    findings
}

/// True when any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}
