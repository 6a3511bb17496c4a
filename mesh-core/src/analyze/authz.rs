//! AuthorizationPolicy checks: rules that allow more than their authors
//! think, and rules that attackers can walk around.

use crate::compile::mtls_policy;
use crate::config::common::{selector_matches, Labels};
use crate::config::mesh_config::PathNormalizationKind;
use crate::config::security::authorization_policy::{Action, AuthorizationPolicy, Rule};
use crate::config::{Kind, Resource};
use crate::model::MtlsMode;

use super::{Context, Finding};

fn is_allow(p: &AuthorizationPolicy) -> bool {
    p.action == Action::Allow
}

fn selector_labels(p: &AuthorizationPolicy) -> Labels {
    p.selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .unwrap_or_default()
}

/// Two label selectors can select the same pod when they agree on every
/// key they share.
fn compatible(a: &Labels, b: &Labels) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

fn is_empty_rule(rule: &Rule) -> bool {
    rule.from.is_empty() && rule.to.is_empty() && rule.when.is_empty()
}

/// The HTTP-only fields a rule uses, by name, for messages.
fn http_only_fields(rule: &Rule) -> Vec<&'static str> {
    let mut fields = Vec::new();
    for to in &rule.to {
        {
            let op = &to.operation;
            for (name, used) in [
                ("hosts", !op.hosts.is_empty()),
                ("notHosts", !op.not_hosts.is_empty()),
                ("methods", !op.methods.is_empty()),
                ("notMethods", !op.not_methods.is_empty()),
                ("paths", !op.paths.is_empty()),
                ("notPaths", !op.not_paths.is_empty()),
            ] {
                if used && !fields.contains(&name) {
                    fields.push(name);
                }
            }
        }
    }
    for from in &rule.from {
        {
            let src = &from.source;
            if !src.request_principals.is_empty() && !fields.contains(&"requestPrincipals") {
                fields.push("requestPrincipals");
            }
            if !src.not_request_principals.is_empty() && !fields.contains(&"notRequestPrincipals") {
                fields.push("notRequestPrincipals");
            }
        }
    }
    if rule.when.iter().any(|c| c.key.starts_with("request.")) {
        fields.push("request.* conditions");
    }
    fields
}

/// Ports a rule is limited to, if every operation lists ports.
fn rule_ports(rule: &Rule) -> Option<Vec<u16>> {
    if rule.to.is_empty() {
        return None;
    }
    let mut ports = Vec::new();
    for to in &rule.to {
        let op = &to.operation;
        if op.ports.is_empty() {
            return None;
        }
        ports.extend(op.ports.iter().filter_map(|p| p.parse::<u16>().ok()));
    }
    Some(ports)
}

fn has_identity_condition(rule: &Rule) -> bool {
    rule.from.iter().any(|f| {
        let s = &f.source;
        !s.principals.is_empty()
            || !s.namespaces.is_empty()
            || !s.service_accounts.is_empty()
            || !s.request_principals.is_empty()
    }) || rule.when.iter().any(|c| {
        matches!(
            c.key.as_str(),
            "source.principal" | "source.namespace" | "request.auth.principal"
        ) && !c.values.is_empty()
    })
}

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for r in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Some(p) = r.authorization_policy() else {
            continue;
        };
        let allow = is_allow(p);
        if allow && p.rules.is_empty() {
            let scope = if r.meta.namespace == ctx.root_namespace() && p.selector.is_none() {
                "every workload in the mesh".to_string()
            } else if p.selector.is_none() {
                format!("every workload in namespace {}", r.meta.namespace)
            } else {
                "the workloads it selects".to_string()
            };
            out.push(Finding::at(
                "authz-deny-all",
                r,
                "spec",
                format!("an ALLOW policy with no rules matches nothing, so it denies every request to {scope}; that is the usual deny-by-default stance, and other ALLOW policies must now open each call path"),
            ));
        }
        for (i, rule) in p.rules.iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            if allow && is_empty_rule(rule) {
                out.push(Finding::at(
                    "authz-allow-all-rule",
                    r,
                    &path,
                    "this empty rule matches every request, so the policy allows everything to the workloads it selects, overriding any deny-by-default; add from/to/when conditions or delete the rule",
                ));
            }
            for (j, to) in rule.to.iter().enumerate() {
                let op = &to.operation;
                if allow && !op.not_paths.is_empty() {
                    out.push(Finding::at(
                        "authz-allow-not-paths",
                        r,
                        &format!("{path}.to[{j}].operation.notPaths"),
                        "an ALLOW rule with notPaths allows every path not listed, including encodings and new endpoints nobody reviewed; list the allowed paths instead, or use a DENY policy with paths",
                    ));
                }
                if p.action == Action::Deny && !op.paths.is_empty() {
                    let mode = ctx.mesh.path_normalization();
                    if matches!(
                        mode,
                        PathNormalizationKind::None | PathNormalizationKind::Base
                    ) {
                        out.push(Finding::at(
                            "authz-deny-paths-unnormalized",
                            r,
                            &format!("{path}.to[{j}].operation.paths"),
                            format!(
                                "a DENY rule on paths with pathNormalization {}: requests for //admin or /%2Fadmin are not normalized to /admin and walk past it; set meshConfig.pathNormalization.normalization to MERGE_SLASHES or DECODE_AND_MERGE_SLASHES, or write the rule as an ALLOW list",
                                super::yaml_name(&mode)
                            ),
                        ));
                    }
                }
            }
            http_fields_on_tcp(ctx, r, p, rule, &path, out);
            if allow && !is_empty_rule(rule) && !has_identity_condition(rule) {
                permissive_plaintext(ctx, r, p, &path, out);
            }
            hosts_on_sidecar(ctx, r, p, rule, &path, out);
        }
    }
}

fn http_fields_on_tcp(
    ctx: &Context<'_>,
    r: &Resource,
    p: &AuthorizationPolicy,
    rule: &Rule,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let fields = http_only_fields(rule);
    if fields.is_empty() {
        return;
    }
    let labels = selector_labels(p);
    let all_ns = r.meta.namespace == ctx.root_namespace();
    let limited = rule_ports(rule);
    let tcp_port = ctx
        .registry()
        .services
        .iter()
        .filter(|s| all_ns || s.namespace == r.meta.namespace)
        .filter(|s| {
            s.selector
                .as_ref()
                .is_some_and(|sel| compatible(&labels, sel))
        })
        .flat_map(|s| s.ports.iter())
        .find(|port| {
            let target = port.target_port.unwrap_or(port.number);
            !port.protocol.is_http()
                && limited
                    .as_ref()
                    .is_none_or(|ports| ports.contains(&target) || ports.contains(&port.number))
        });
    if let Some(port) = tcp_port {
        let effect = if p.action == Action::Deny {
            "on that port Istio drops those fields and the DENY applies to all its traffic"
        } else {
            "on that port this ALLOW rule never matches, so its traffic is denied"
        };
        out.push(Finding::at(
            "authz-http-fields-on-tcp",
            r,
            path,
            format!(
                "the rule uses HTTP-only fields ({}) but applies to port {} ({}), which is not HTTP; {effect}. Limit the rule with `ports` to the HTTP ports, or split it",
                fields.join(", "),
                port.number,
                port.protocol.as_str()
            ),
        ));
    }
}

fn permissive_plaintext(
    ctx: &Context<'_>,
    r: &Resource,
    p: &AuthorizationPolicy,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let labels = selector_labels(p);
    // The policy's own selector, plus each workload-level PeerAuthentication
    // in the namespace whose selector may overlap it.
    let mut candidates = vec![labels.clone()];
    for pa in ctx.of_kind(Kind::PeerAuthentication) {
        if pa.meta.namespace != r.meta.namespace {
            continue;
        }
        if let Some(sel) = pa.peer_authentication().and_then(|x| x.selector.as_ref()) {
            if compatible(&labels, &sel.match_labels) {
                let mut merged = labels.clone();
                merged.extend(sel.match_labels.clone());
                candidates.push(merged);
            }
        }
    }
    for cand in candidates {
        let policy = mtls_policy(&ctx.compiler, &r.meta.namespace, &cand);
        if policy.sources.is_empty() {
            continue;
        }
        let weak = std::iter::once(policy.mode)
            .chain(policy.ports.values().copied())
            .find(|m| *m != MtlsMode::Strict);
        if let Some(mode) = weak {
            out.push(Finding::at(
                "authz-permissive-plaintext",
                r,
                path,
                format!(
                    "this ALLOW rule has no source identity condition and applies to workloads whose PeerAuthentication ({}) is {}, so plaintext callers from anywhere match it; require principals/namespaces in `from`, or make mTLS STRICT",
                    policy.sources.join(", "),
                    super::yaml_name(&mode)
                ),
            ));
            return;
        }
    }
}

fn hosts_on_sidecar(
    ctx: &Context<'_>,
    r: &Resource,
    p: &AuthorizationPolicy,
    rule: &Rule,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let uses_hosts = rule
        .to
        .iter()
        .any(|t| !t.operation.hosts.is_empty() || !t.operation.not_hosts.is_empty());
    if !uses_hosts {
        return;
    }
    let targets_gateway = p
        .target_refs
        .iter()
        .chain(p.target_ref.iter())
        .any(|t| t.kind == "Gateway" || t.kind == "GatewayClass");
    if targets_gateway {
        return;
    }
    let labels = selector_labels(p);
    let on_gateway = !labels.is_empty()
        && ctx.of_kind(Kind::Gateway).any(|g| {
            g.gateway()
                .is_some_and(|g| selector_matches(&labels, &g.selector))
        });
    if !on_gateway {
        out.push(Finding::at(
            "authz-hosts-on-sidecar",
            r,
            path,
            "hosts/notHosts match the Host header, which a caller inside the mesh can set to anything when it talks to a workload directly; enforce host-based rules on a gateway (select the gateway's labels) and use paths, ports or identities on workloads",
        ));
    }
}
