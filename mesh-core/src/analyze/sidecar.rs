//! Sidecar checks.

use std::collections::BTreeMap;

use crate::config::Kind;

use super::{Context, Finding};

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut defaults: BTreeMap<&str, Vec<&crate::config::Resource>> = BTreeMap::new();
    for r in ctx.of_kind(Kind::Sidecar) {
        if r.sidecar().is_some_and(|s| s.workload_selector.is_none()) {
            defaults
                .entry(r.meta.namespace.as_str())
                .or_default()
                .push(r);
        }
    }
    for (ns, list) in defaults {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<&str> = list.iter().map(|r| r.meta.name.as_str()).collect();
        for r in &list[1..] {
            out.push(Finding::at(
                "sidecar-multiple-default",
                r,
                "",
                format!(
                    "namespace {ns} has {} Sidecars without workloadSelector ({}); only one may be the namespace default and which one wins is undefined. Merge them, or add a workloadSelector to all but one",
                    list.len(),
                    names.join(", ")
                ),
            ));
        }
    }
}
