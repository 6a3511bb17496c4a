//! Access-log merging, as istiod's `Telemetries.AccessLogging` /
//! `mergeLogs` and the listener code that applies them
//! (`pilot/pkg/networking/core/accesslog.go`), one direction at a time.
//!
//! - No applicable resource with `accessLogging` and no
//!   `defaultProviders.accessLogging`: MeshConfig decides (`accessLogFile`,
//!   written with `accessLogEncoding` / `accessLogFormat`; empty: no log).
//! - Otherwise the providers in scope are those named by the most specific
//!   level whose entries (for this direction) name any, else the defaults.
//!   Entries are walked least specific first; an entry without `providers`
//!   inherits the previous entry's; an entry whose `match.mode` excludes the
//!   direction is skipped; `disabled: true` turns its providers off, any
//!   other entry turns them (back) on with the filter last given *by an
//!   entry that names that provider explicitly* (istiod records filters only
//!   for explicitly named providers: a `filter` on an entry without
//!   `providers` is not applied).
//! - Providers that are not found or cannot log are dropped; if nothing is
//!   left (not even a disabled one), MeshConfig decides after all.
//! - Logs are ordered by provider name.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::mesh_config::providers::AccessLogFormat;
use crate::config::mesh_config::{AccessLogEncoding, ExtensionProvider, MeshConfig};
use crate::config::telemetry::{AccessLogFilter, AccessLogging, WorkloadMode};

use super::cel::CelExpr;
use super::policy::{AccessLog, AccessLogPolicy, AccessLogSink, AccessLogSource, LogFormat};
use super::providers::{fetch, names};

#[derive(Debug, Clone, Default)]
struct Spec<'a> {
    disabled: bool,
    filter: Option<&'a AccessLogFilter>,
}

fn applies(e: &AccessLogging, mode: WorkloadMode) -> bool {
    e.match_.is_none_or(|m| m.mode.covers(mode))
}

/// The access logs of one direction; `levels` are the `accessLogging` lists
/// of the applicable resources that have one, least specific first.
pub fn merge(
    levels: &[&[AccessLogging]],
    mesh: &MeshConfig,
    mode: WorkloadMode,
) -> AccessLogPolicy {
    let defaults = mesh.default_providers().access_logging;
    if levels.is_empty() && defaults.is_empty() {
        return legacy(mesh);
    }
    let mut providers: BTreeMap<String, Spec<'_>> = BTreeMap::new();
    if levels.is_empty() {
        for d in &defaults {
            providers.insert(d.clone(), Spec::default());
        }
    } else {
        let mut in_scope = defaults.clone();
        let mut filters: BTreeMap<String, Option<&AccessLogFilter>> = BTreeMap::new();
        for level in levels {
            let mut named = BTreeSet::new();
            for e in level.iter().filter(|e| applies(e, mode)) {
                for p in names(&e.providers) {
                    filters.insert(p.clone(), e.filter.as_ref());
                    named.insert(p);
                }
            }
            if !named.is_empty() {
                in_scope = named.into_iter().collect();
            }
        }
        let in_scope: BTreeSet<String> = in_scope.into_iter().collect();
        let mut parent = defaults;
        for e in levels.iter().flat_map(|l| l.iter()) {
            let list = if e.providers.is_empty() {
                parent.clone()
            } else {
                names(&e.providers)
            };
            parent = list.clone();
            if !applies(e, mode) {
                continue;
            }
            for p in list.into_iter().filter(|p| in_scope.contains(p)) {
                let spec = if e.disabled == Some(true) {
                    Spec {
                        disabled: true,
                        filter: None,
                    }
                } else {
                    Spec {
                        disabled: false,
                        filter: filters.get(&p).copied().flatten(),
                    }
                };
                providers.insert(p, spec);
            }
        }
    }
    let mut found: Vec<(String, bool, AccessLog)> = providers
        .into_iter()
        .filter_map(|(name, spec)| {
            let p = fetch(mesh, &name)?;
            let sink = sink(&p)?;
            Some((
                p.name.clone(),
                spec.disabled,
                AccessLog {
                    provider: p.name,
                    sink,
                    filter: spec
                        .filter
                        .map(|f| CelExpr::compile_or_failing(&f.expression)),
                },
            ))
        })
        .collect();
    if found.is_empty() {
        return legacy(mesh);
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    AccessLogPolicy {
        source: AccessLogSource::Telemetry,
        logs: found
            .into_iter()
            .filter(|(_, disabled, _)| !disabled)
            .map(|(_, _, l)| l)
            .collect(),
    }
}

/// How a provider writes logs; `None` for providers that do not log here
/// (tracers, metrics, stackdriver, a file provider without a path).
fn sink(p: &ExtensionProvider) -> Option<AccessLogSink> {
    if let Some(f) = &p.envoy_file_access_log {
        let path = f.path.clone().filter(|p| !p.is_empty())?;
        return Some(AccessLogSink::File {
            path,
            format: format(f.log_format.as_ref()),
        });
    }
    if let Some(o) = &p.envoy_otel_als {
        return Some(AccessLogSink::OpenTelemetry(o.clone()));
    }
    p.envoy_http_als
        .as_ref()
        .or(p.envoy_tcp_als.as_ref())
        .map(|g| AccessLogSink::Grpc(g.clone()))
}

fn format(f: Option<&AccessLogFormat>) -> LogFormat {
    match f {
        Some(AccessLogFormat {
            labels: Some(l), ..
        }) => LogFormat::Json((!l.is_empty()).then(|| l.clone())),
        Some(AccessLogFormat { text: Some(t), .. }) if !t.is_empty() => LogFormat::Text(t.clone()),
        _ => LogFormat::DefaultText,
    }
}

/// MeshConfig's access log: `accessLogFile` in `accessLogEncoding`, with
/// `accessLogFormat` (a format string for TEXT, a JSON object of fields for
/// JSON; Istio's default when empty).
fn legacy(mesh: &MeshConfig) -> AccessLogPolicy {
    let logs = mesh
        .access_log_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|path| {
            let fmt = mesh.access_log_format.as_deref().filter(|f| !f.is_empty());
            let format = match mesh.access_log_encoding.unwrap_or_default() {
                AccessLogEncoding::Text => {
                    fmt.map_or(LogFormat::DefaultText, |f| LogFormat::Text(f.to_string()))
                }
                AccessLogEncoding::Json => LogFormat::Json(fmt.and_then(|f| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(f).ok()
                })),
            };
            AccessLog {
                provider: String::new(),
                sink: AccessLogSink::File {
                    path: path.to_string(),
                    format,
                },
                filter: None,
            }
        })
        .into_iter()
        .collect();
    AccessLogPolicy {
        source: AccessLogSource::MeshConfig,
        logs,
    }
}
