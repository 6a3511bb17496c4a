//! VirtualService checks.

use crate::config::networking::virtual_service::{Destination, VirtualService};
use crate::config::{Kind, Resource};
use crate::host::host_matches;
use crate::registry::ExportTo;
use crate::route::unreachable_rules;

use super::{Context, Finding};

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for r in ctx.of_kind(Kind::VirtualService) {
        let Some(vs) = r.virtual_service() else {
            continue;
        };
        for (i, route) in vs.http.iter().enumerate() {
            let path = format!("spec.http[{i}]");
            if route.fault.is_some() && (route.retries.is_some() || route.timeout.is_some()) {
                out.push(Finding::at(
                    "vs-fault-with-retry",
                    r,
                    &format!("{path}.fault"),
                    "this route has fault injection together with retries or a timeout; Istio silently ignores the retries and timeout on such a route, so the resilience you test is not the one in production. Put the fault on its own route (this mesh applies faults per attempt and honours both; Istio does not)",
                ));
            }
            if let (Some(timeout), Some(retries)) = (route.timeout, route.retries.as_ref()) {
                let attempts = retries.attempts;
                if let (true, Some(per_try)) = (attempts > 0, retries.per_try_timeout) {
                    let budget = per_try.get() * u32::try_from(attempts).unwrap_or(u32::MAX);
                    if timeout.get() <= budget {
                        out.push(Finding::at(
                            "vs-timeout-below-retries",
                            r,
                            &format!("{path}.timeout"),
                            format!(
                                "timeout {timeout} is not longer than attempts x perTryTimeout ({attempts} x {per_try}); later retries are cut off by the overall timeout. Raise the timeout above {} or lower attempts/perTryTimeout",
                                crate::config::common::Duration(budget)
                            ),
                        ));
                    }
                }
            }
            if let Some(retry_on) = route.retries.as_ref().and_then(|r| r.retry_on.as_deref()) {
                if retry_on.split(',').any(|c| c.trim() == "retriable-4xx") {
                    out.push(Finding::at(
                        "vs-retriable-4xx",
                        r,
                        &format!("{path}.retries.retryOn"),
                        "retriable-4xx retries 409 Conflict, which usually fails the same way again and can repeat non-idempotent writes (payments, orders); drop it unless the upstream's 409s are safe to retry",
                    ));
                }
            }
            for (j, d) in route.route.iter().enumerate() {
                unknown_subset(
                    ctx,
                    r,
                    &d.destination,
                    &format!("{path}.route[{j}].destination"),
                    out,
                );
            }
            if let Some(m) = &route.mirror {
                unknown_subset(ctx, r, m, &format!("{path}.mirror"), out);
            }
            for (j, m) in route.mirrors.iter().enumerate() {
                unknown_subset(
                    ctx,
                    r,
                    &m.destination,
                    &format!("{path}.mirrors[{j}].destination"),
                    out,
                );
            }
        }
        unreachable(r, vs, out);
    }
}

fn unreachable(r: &Resource, vs: &VirtualService, out: &mut Vec<Finding>) {
    for (rule_index, match_index, shadowed_by) in unreachable_rules(vs) {
        let (path, what) = match match_index {
            Some(m) => (
                format!("spec.http[{rule_index}].match[{m}]"),
                format!("match {m} of http rule {rule_index}"),
            ),
            None => (
                format!("spec.http[{rule_index}]"),
                format!("http rule {rule_index}"),
            ),
        };
        out.push(Finding::at(
            "vs-unreachable-rule",
            r,
            &path,
            format!(
                "{what} can never match: rule {shadowed_by} before it takes every request it would match. Rules are tried in order, first match wins; move the broader rule after it"
            ),
        ));
    }
}

fn unknown_subset(
    ctx: &Context<'_>,
    r: &Resource,
    d: &Destination,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else {
        return;
    };
    let host = ctx.fqdn(&d.host, &r.meta.namespace);
    let defaults = &ctx.mesh.default_destination_rule_export_to;
    let defined = ctx.of_kind(Kind::DestinationRule).any(|dr_res| {
        let Some(dr) = dr_res.destination_rule() else {
            return false;
        };
        let dr_host = ctx.fqdn(&dr.host, &dr_res.meta.namespace);
        host_matches(&dr_host, &host)
            && ExportTo::parse(&dr.export_to, &dr_res.meta.namespace, defaults)
                .visible_to(&r.meta.namespace)
            && dr.subsets.iter().any(|s| s.name == subset)
    });
    if !defined {
        out.push(Finding::at(
            "vs-unknown-subset",
            r,
            &format!("{path}.subset"),
            format!(
                "subset {subset:?} of {host} is not defined by any DestinationRule visible here; requests routed to it fail with 503 (no healthy upstream). Define the subset in the DestinationRule for {host} before routing to it"
            ),
        ));
    }
}
