//! DestinationRule checks.

use crate::config::networking::destination_rule::{ClientTlsMode, TrafficPolicy};
use crate::config::{Kind, Resource};

use super::{Context, Finding};

/// Calls `f` with every traffic policy of a DestinationRule and its path:
/// the top level, its port-level settings, and each subset's.
fn each_policy(
    dr: &crate::config::networking::DestinationRule,
    mut f: impl FnMut(&TrafficPolicy, String),
) {
    if let Some(tp) = &dr.traffic_policy {
        f(tp, "spec.trafficPolicy".into());
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            f(tp, format!("spec.subsets[{i}].trafficPolicy"));
        }
    }
}

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for r in ctx.of_kind(Kind::DestinationRule) {
        let Some(dr) = r.destination_rule() else {
            continue;
        };
        namespace_ignored(ctx, r, &dr.host, out);
        let host = ctx.fqdn(&dr.host, &r.meta.namespace);
        let in_mesh = ctx
            .registry()
            .services_named(&host)
            .any(|s| !s.mesh_external);
        let top_outlier = dr
            .traffic_policy
            .as_ref()
            .is_some_and(|t| t.outlier_detection.is_some());
        each_policy(dr, |tp, path| {
            let od = tp.outlier_detection.as_ref();
            if let Some(od) = od {
                if od.consecutive_errors.is_some() {
                    out.push(Finding::at(
                        "dr-deprecated-consecutive-errors",
                        r,
                        &format!("{path}.outlierDetection.consecutiveErrors"),
                        "consecutiveErrors is deprecated and counts only 502/503/504 as errors; use consecutive5xxErrors (all 5xx) or consecutiveGatewayErrors (502/503/504) instead",
                    ));
                }
                if od.max_ejection_percent == Some(100) && od.min_health_percent.unwrap_or(0) == 0 {
                    out.push(Finding::at(
                        "dr-ejects-all",
                        r,
                        &format!("{path}.outlierDetection.maxEjectionPercent"),
                        "maxEjectionPercent: 100 without minHealthPercent lets outlier detection eject every endpoint at once, turning a bad deploy into a total outage (all requests 503 UH); keep maxEjectionPercent below 100 or set minHealthPercent (e.g. 40)",
                    ));
                }
            }
            let failover = tp
                .load_balancer
                .as_ref()
                .and_then(|lb| lb.locality_lb_setting.as_ref())
                .is_some_and(|l| !l.failover.is_empty() || !l.failover_priority.is_empty());
            if failover && od.is_none() && !top_outlier {
                out.push(Finding::at(
                    "dr-failover-without-outlier",
                    r,
                    &format!("{path}.loadBalancer.localityLbSetting"),
                    "locality failover only happens when endpoints are ejected, and nothing ejects them without outlierDetection; add an outlierDetection block (e.g. consecutive5xxErrors: 5, interval: 10s)",
                ));
            }
            if let Some(tls) = &tp.tls {
                let mode = tls.mode.unwrap_or_default();
                if in_mesh {
                    out.push(Finding::at(
                        "dr-tls-mesh-host",
                        r,
                        &format!("{path}.tls"),
                        format!(
                            "{host} is in the mesh, where auto-mTLS already negotiates mTLS: ISTIO_MUTUAL is redundant, and DISABLE or SIMPLE breaks calls to STRICT peers (503); remove trafficPolicy.tls (mode here: {})",
                            super::yaml_name(&mode)
                        ),
                    ));
                }
                if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
                    && tls.subject_alt_names.is_empty()
                    && !tls.insecure_skip_verify.unwrap_or(false)
                {
                    out.push(Finding::at(
                        "dr-tls-no-san",
                        r,
                        &format!("{path}.tls"),
                        "TLS origination without subjectAltNames does not check that the server certificate is for this host; list the expected names in subjectAltNames",
                    ));
                }
            }
        });
    }
}

/// A DestinationRule is looked up in the client's namespace, the service's
/// and the root namespace. One that lives elsewhere only affects clients in
/// its own namespace, which is rarely what its author meant.
fn namespace_ignored(ctx: &Context<'_>, r: &Resource, host: &str, out: &mut Vec<Finding>) {
    let ns = r.meta.namespace.as_str();
    if ns == ctx.root_namespace() {
        return;
    }
    let fq = ctx.fqdn(host, ns);
    let host_namespaces: Vec<String> = {
        let from_registry: Vec<String> = ctx
            .registry()
            .services_named(&fq)
            .map(|s| s.namespace.clone())
            .collect();
        if !from_registry.is_empty() {
            from_registry
        } else if let Some((_, svc_ns)) = crate::host::service_of(&fq, ctx.domain_suffix()) {
            vec![svc_ns.to_string()]
        } else {
            return;
        }
    };
    if !host_namespaces.iter().any(|h| h == ns) {
        out.push(Finding::at(
            "dr-namespace-ignored",
            r,
            "spec.host",
            format!(
                "this DestinationRule for {fq} lives in namespace {ns}, but {fq} is declared in {}; it only affects clients in {ns} and everyone else ignores it. Move it to {} or to the root namespace {}",
                host_namespaces.join(", "),
                host_namespaces[0],
                ctx.root_namespace()
            ),
        ));
    }
}
