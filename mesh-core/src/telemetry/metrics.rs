//! Metrics merging, as istiod's `mergeMetrics`: the `metrics` lists of the
//! applicable resources are walked least specific first.
//!
//! - Providers: a list's `providers` replaces the inherited ones (MeshConfig
//!   `defaultProviders.metrics` at the top); only the providers named last
//!   are kept at all.
//! - Overrides accumulate in order, per provider, direction and metric: a
//!   later `disabled` replaces an earlier one, `tagOverrides` merge tag by
//!   tag (a later entry for the same tag wins). An override without `match`,
//!   or matching `ALL_METRICS`, touches all ten standard metrics; `mode`
//!   unset means both directions.
//! - `ALL_METRICS` with `disabled: true` turns the whole direction off; any
//!   later override for that direction turns it back on.
//! - `reportingInterval`: the last one set.
//!
//! Only Prometheus providers are executed; others are named in
//! [`MetricsPolicy::ignored_providers`]. With no `defaultProviders.metrics`,
//! `prometheus` is the default, as Istio's installation writes it into
//! MeshConfig.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::common::Duration;
use crate::config::mesh_config::ProviderKind;
use crate::config::telemetry::{
    IstioMetric, MetricSelector, Metrics, TagOperation, TagOverride, WorkloadMode,
};
use crate::config::MeshConfig;

use super::cel::CelExpr;
use super::policy::{Direction, MetricPolicy, MetricsPolicy, TagAction};
use super::providers::{fetch, names};

/// A metric as overrides name it: standard or custom.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum MetricName {
    Standard(IstioMetric),
    Custom(String),
}

#[derive(Debug, Clone, Default)]
struct Override {
    disabled: Option<bool>,
    tags: BTreeMap<String, TagOverride>,
}

type ModeMap = BTreeMap<Mode, BTreeMap<MetricName, Override>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Client,
    Server,
}

fn modes(m: Option<WorkloadMode>) -> &'static [Mode] {
    match m.unwrap_or_default() {
        WorkloadMode::Client => &[Mode::Client],
        WorkloadMode::Server => &[Mode::Server],
        WorkloadMode::ClientAndServer => &[Mode::Client, Mode::Server],
    }
}

fn is_all(m: Option<&MetricSelector>) -> bool {
    match m {
        None => true,
        Some(s) if s.custom_metric.is_some() => false,
        Some(s) => s.metric.is_none_or(|m| m == IstioMetric::AllMetrics),
    }
}

fn matches(m: Option<&MetricSelector>) -> Vec<MetricName> {
    if let Some(c) = m.and_then(|s| s.custom_metric.clone()) {
        return vec![MetricName::Custom(c)];
    }
    match m.and_then(|s| s.metric) {
        Some(one) if one != IstioMetric::AllMetrics => vec![MetricName::Standard(one)],
        _ => IstioMetric::STANDARD
            .iter()
            .map(|m| MetricName::Standard(*m))
            .collect(),
    }
}

/// The default metrics providers.
fn defaults(mesh: &MeshConfig) -> Vec<String> {
    let d = mesh.default_providers().metrics;
    if d.is_empty() {
        vec!["prometheus".to_string()]
    } else {
        d
    }
}

/// The merged metrics of both directions.
pub fn merge(lists: &[&Metrics], mesh: &MeshConfig) -> (MetricsPolicy, MetricsPolicy) {
    let defaults = defaults(mesh);
    let mut providers: BTreeMap<String, ModeMap> = BTreeMap::new();
    if lists.is_empty() {
        for d in &defaults {
            providers.insert(d.clone(), ModeMap::new());
        }
    }
    let mut last = defaults.clone();
    for m in lists {
        if !m.providers.is_empty() {
            last = names(&m.providers);
        }
    }
    let in_scope: BTreeSet<String> = last.into_iter().collect();
    let mut parent = defaults;
    let mut all_disabled: BTreeSet<(String, Mode)> = BTreeSet::new();
    let mut intervals: BTreeMap<String, Duration> = BTreeMap::new();
    for m in lists {
        let list = if m.providers.is_empty() {
            parent.clone()
        } else {
            names(&m.providers)
        };
        parent = list.clone();
        for p in list.iter().filter(|p| in_scope.contains(*p)) {
            if let Some(i) = m.reporting_interval {
                intervals.insert(p.clone(), i);
            }
            let mp = providers.entry(p.clone()).or_insert_with(|| {
                [
                    (Mode::Client, BTreeMap::new()),
                    (Mode::Server, BTreeMap::new()),
                ]
                .into_iter()
                .collect()
            });
            for o in &m.overrides {
                let sel = o.match_.as_ref();
                let mode = sel.and_then(|s| s.mode);
                if is_all(sel) && o.disabled == Some(true) {
                    for md in modes(mode) {
                        all_disabled.insert((p.clone(), *md));
                    }
                    continue;
                }
                let metrics = matches(sel);
                for md in modes(mode) {
                    all_disabled.remove(&(p.clone(), *md));
                    let per_metric = mp.entry(*md).or_default();
                    for name in &metrics {
                        let ov = per_metric.entry(name.clone()).or_default();
                        if o.disabled.is_some() {
                            ov.disabled = o.disabled;
                        }
                        for (k, v) in &o.tag_overrides {
                            ov.tags.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
    }
    // The first Prometheus provider in name order is executed; a second one
    // would only count everything twice.
    let mut chosen: Option<(String, ModeMap)> = None;
    let mut ignored = Vec::new();
    for (name, modes) in providers {
        let kind = fetch(mesh, &name).and_then(|p| p.kind());
        if kind == Some(ProviderKind::Prometheus) && chosen.is_none() {
            chosen = Some((name, modes));
        } else {
            ignored.push(name);
        }
    }
    let build = |dir: Direction| {
        let mode = match dir {
            Direction::Client => Mode::Client,
            Direction::Server => Mode::Server,
        };
        let mut out = MetricsPolicy {
            enabled: false,
            metrics: IstioMetric::STANDARD
                .iter()
                .map(|m| {
                    (
                        *m,
                        MetricPolicy {
                            enabled: true,
                            tags: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            custom: BTreeMap::new(),
            reporting_interval: None,
            ignored_providers: ignored.clone(),
        };
        let Some((name, modes)) = &chosen else {
            return out;
        };
        out.reporting_interval = intervals.get(name).copied();
        if all_disabled.contains(&(name.clone(), mode)) {
            return out;
        }
        out.enabled = true;
        for (metric, ov) in modes.get(&mode).into_iter().flatten() {
            let policy = MetricPolicy {
                enabled: !ov.disabled.unwrap_or(false),
                tags: ov
                    .tags
                    .iter()
                    .map(|(k, t)| (k.clone(), action(t)))
                    .collect(),
            };
            match metric {
                MetricName::Standard(m) => {
                    out.metrics.insert(*m, policy);
                }
                MetricName::Custom(c) => {
                    out.custom.insert(c.clone(), policy);
                }
            }
        }
        out
    };
    (build(Direction::Client), build(Direction::Server))
}

fn action(t: &TagOverride) -> TagAction {
    match t.operation.unwrap_or_default() {
        TagOperation::Remove => TagAction::Remove,
        TagOperation::Upsert => TagAction::Upsert(CelExpr::compile_or_failing(
            t.value.as_deref().unwrap_or(""),
        )),
    }
}
