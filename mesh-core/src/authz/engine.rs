//! The authorization decision, in Istio's order:
//!
//! 1. CUSTOM: if a CUSTOM policy matches, the request goes to its extension
//!    provider, which can deny it. The engine cannot ask the provider (that
//!    is I/O), so it reports the provider in [`Decision::custom_provider`];
//!    the caller denies when the provider denies. Only the first matching
//!    CUSTOM policy is reported (Istio allows one provider per workload).
//! 2. DENY: any matching DENY policy denies.
//! 3. ALLOW: with no ALLOW policy on the workload the request is allowed;
//!    otherwise it must match a rule of one of them.
//! 4. AUDIT policies never change the decision; matches are listed.
//!
//! Dry-run policies (`istio.io/dry-run: "true"`) never change the decision;
//! when any apply, [`Decision::dry_run`] says what the decision would be if
//! they were enforced.

use std::sync::Arc;

use serde::Serialize;

use super::path::{normalize, Normalization};
use super::policy::{CompiledPolicy, Ctx};
use super::request::Request;
use crate::config::security::authorization_policy::Action;
use crate::config::Resource;

/// ALLOW or DENY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// The request may proceed (subject to [`Decision::custom_provider`]).
    Allow,
    /// The request is refused (403 for HTTP, connection closed for TCP).
    Deny,
}

/// A policy rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `namespace/name`.
    pub policy: String,
    /// Index into `spec.rules`.
    pub rule_index: usize,
}

/// What the decision would be with dry-run policies enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// The decision with dry-run policies enforced.
    pub decision: Verdict,
    /// The deciding policy, if any.
    pub policy: Option<String>,
    /// Its action.
    pub action: Option<Action>,
    /// Its matching rule.
    pub rule_index: Option<usize>,
    /// Why.
    pub reason: String,
}

/// The outcome of an authorization check, as `meshctl x authz` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// ALLOW or DENY (when `custom_provider` is set, ALLOW means "allowed if
    /// the provider allows").
    pub decision: Verdict,
    /// The deciding policy, `namespace/name`; `null` when no policy decided
    /// (no policy applies, or the request was malformed).
    pub policy: Option<String>,
    /// The deciding policy's action.
    pub action: Option<Action>,
    /// The deciding rule's index in `spec.rules`.
    pub rule_index: Option<usize>,
    /// A sentence a person can act on.
    pub reason: String,
    /// A matching CUSTOM policy's provider, to be consulted when the local
    /// decision is ALLOW: the request is denied if the provider denies it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_provider: Option<String>,
    /// Matching AUDIT policies (the request should be audited).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<RuleRef>,
    /// The decision if dry-run policies were enforced (present when any apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    /// The path the policies were matched against (HTTP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
}

impl Decision {
    /// True when the request may proceed without asking anyone else.
    pub fn is_allowed(&self) -> bool {
        self.decision == Verdict::Allow && self.custom_provider.is_none()
    }

    /// The final verdict once the CUSTOM provider (if any) has answered.
    pub fn with_provider_answer(&self, provider_allows: bool) -> Verdict {
        match (self.decision, &self.custom_provider) {
            (Verdict::Allow, Some(_)) if !provider_allows => Verdict::Deny,
            (v, _) => v,
        }
    }
}

struct Inner {
    policies: Vec<CompiledPolicy>,
    /// Set when the policies came as RBAC filters from an xDS server
    /// (then `policies` is empty and these decide).
    rbac: Option<super::decoded::RbacPorts>,
    normalization: Normalization,
    /// Indices of enforced policies per action (CUSTOM, DENY, ALLOW).
    enforced: [Vec<usize>; 3],
    /// Indices of all policies, dry-run included, per action.
    with_dry_run: [Vec<usize>; 3],
}

fn action_slot(a: Action) -> Option<usize> {
    match a {
        Action::Custom => Some(0),
        Action::Deny => Some(1),
        Action::Allow => Some(2),
        Action::Audit => None,
    }
}

/// The compiled policies that apply to one workload. Cheap to clone (an
/// `Arc`), `Send + Sync`, immutable: build a new one when config changes.
#[derive(Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field(
                "policies",
                &self
                    .inner
                    .policies
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>(),
            )
            .field("normalization", &self.inner.normalization)
            .field("rbac", &self.inner.rbac)
            .finish()
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A DENY policy matched (the decider).
    Denied,
    /// An ALLOW policy matched (the decider).
    Allowed,
    /// No ALLOW policy applies.
    Open,
    /// ALLOW policies apply and none matched.
    NotAllowed,
}

/// The result of one allocation-free pass over the policies: indices only.
#[derive(Debug, Clone, Copy)]
struct Pass {
    verdict: Verdict,
    stage: Stage,
    /// (policy, rule) of the DENY or ALLOW rule that decided.
    decider: Option<(usize, usize)>,
    /// (policy, rule) of the first matching CUSTOM rule.
    custom: Option<(usize, usize)>,
}

/// The fast answer of [`PolicySet::check`]: no strings built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    /// ALLOW or DENY (subject to `custom_provider` when ALLOW).
    pub verdict: Verdict,
    /// The deciding policy (`namespace/name`), if any.
    pub policy: Option<&'a str>,
    /// The deciding rule.
    pub rule_index: Option<usize>,
    /// The CUSTOM provider to consult when the verdict is ALLOW.
    pub custom_provider: Option<&'a str>,
}

impl PolicySet {
    /// Compiles the given policies (already selected for the workload; other
    /// kinds are ignored). Policies are ordered by namespace/name so reports
    /// are stable.
    pub fn compile<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        normalization: Normalization,
    ) -> Self {
        let policies = resources
            .into_iter()
            .filter_map(CompiledPolicy::compile)
            .collect();
        Self::from_compiled(policies, normalization)
    }

    /// Builds a set from compiled policies.
    pub fn from_compiled(mut policies: Vec<CompiledPolicy>, normalization: Normalization) -> Self {
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut enforced: [Vec<usize>; 3] = Default::default();
        let mut with_dry_run: [Vec<usize>; 3] = Default::default();
        for (i, p) in policies.iter().enumerate() {
            if let Some(slot) = action_slot(p.action) {
                with_dry_run[slot].push(i);
                if !p.dry_run {
                    enforced[slot].push(i);
                }
            }
        }
        Self {
            inner: Arc::new(Inner {
                policies,
                rbac: None,
                normalization,
                enforced,
                with_dry_run,
            }),
        }
    }

    /// A set that enforces RBAC filters an xDS server sent, with Envoy's
    /// semantics, per port (see [`super::decoded`]); paths are normalized
    /// with `normalization` first, as the server's HTTP layer would.
    pub fn from_rbac(rbac: super::decoded::RbacPorts, normalization: Normalization) -> Self {
        Self {
            inner: Arc::new(Inner {
                policies: Vec::new(),
                rbac: Some(rbac),
                normalization,
                enforced: Default::default(),
                with_dry_run: Default::default(),
            }),
        }
    }

    /// The RBAC filters this set enforces, when it came from them.
    pub fn rbac(&self) -> Option<&super::decoded::RbacPorts> {
        self.inner.rbac.as_ref()
    }

    /// The compiled policies, in evaluation order.
    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.inner.policies
    }

    /// The path normalization applied before matching.
    pub fn normalization(&self) -> Normalization {
        self.inner.normalization
    }

    /// Problems found while compiling (values validation should have rejected).
    pub fn warnings(&self) -> Vec<String> {
        self.inner
            .policies
            .iter()
            .flat_map(|p| p.warnings.iter().map(move |w| format!("{}: {w}", p.name)))
            .collect()
    }

    /// Authorizes one request without explaining: the hot path of the
    /// server-side layer. Same verdict as [`PolicySet::evaluate`].
    pub fn check(&self, req: &Request) -> Check<'_> {
        if let Some(r) = &self.inner.rbac {
            return r.check(req, self.inner.normalization);
        }
        let normalized = if req.protocol == super::request::Protocol::Http {
            match normalize(&req.path, self.inner.normalization) {
                Ok(p) => Some(p),
                Err(_) => {
                    return Check {
                        verdict: Verdict::Deny,
                        policy: None,
                        rule_index: None,
                        custom_provider: None,
                    }
                }
            }
        } else {
            None
        };
        let ctx = Ctx::new(req, normalized.as_deref());
        let pass = self.pass(&ctx, false);
        let policies = &self.inner.policies;
        let decider = match (pass.verdict, pass.custom) {
            (Verdict::Allow, Some(c)) => Some(c),
            _ => pass.decider,
        };
        Check {
            verdict: pass.verdict,
            policy: decider.map(|(p, _)| policies[p].name.as_str()),
            rule_index: decider.map(|(_, r)| r),
            custom_provider: pass
                .custom
                .filter(|_| pass.verdict == Verdict::Allow)
                .map(|(p, _)| policies[p].provider.as_deref().unwrap_or("")),
        }
    }

    /// Authorizes one request and explains the decision.
    pub fn evaluate(&self, req: &Request) -> Decision {
        if let Some(r) = &self.inner.rbac {
            return r.evaluate(req, self.inner.normalization);
        }
        let http = req.protocol == super::request::Protocol::Http;
        let normalized = if http {
            match normalize(&req.path, self.inner.normalization) {
                Ok(p) => Some(p),
                Err(e) => {
                    return Decision {
                        decision: Verdict::Deny,
                        policy: None,
                        action: None,
                        rule_index: None,
                        reason: format!("rejected before authorization: {e}"),
                        custom_provider: None,
                        audit: Vec::new(),
                        dry_run: None,
                        normalized_path: None,
                    }
                }
            }
        } else {
            None
        };
        let ctx = Ctx::new(req, normalized.as_deref());
        let policies = &self.inner.policies;
        let pass = self.pass(&ctx, false);

        let audit = policies
            .iter()
            .filter(|p| p.action == Action::Audit && !p.dry_run)
            .filter_map(|p| {
                p.first_match(&ctx).map(|r| RuleRef {
                    policy: p.name.clone(),
                    rule_index: r,
                })
            })
            .collect();

        let dry_run = policies.iter().any(|p| p.dry_run).then(|| {
            let d = self.pass(&ctx, true);
            let (policy, action, rule_index) = self.decider_fields(d.reported());
            DryRun {
                decision: d.verdict,
                policy,
                action,
                rule_index,
                reason: self.reason(&ctx, &d, true),
            }
        });

        let (policy, action, rule_index) = self.decider_fields(pass.reported());
        let custom_provider = pass
            .custom
            .filter(|_| pass.verdict == Verdict::Allow)
            .map(|(p, _)| policies[p].provider.clone().unwrap_or_default());
        Decision {
            decision: pass.verdict,
            policy,
            action,
            rule_index,
            reason: self.reason(&ctx, &pass, false),
            custom_provider,
            audit,
            dry_run,
            normalized_path: normalized.map(|p| p.into_owned()),
        }
    }

    fn decider_fields(
        &self,
        decider: Option<(usize, usize)>,
    ) -> (Option<String>, Option<Action>, Option<usize>) {
        match decider {
            Some((p, r)) => {
                let p = &self.inner.policies[p];
                (Some(p.name.clone()), Some(p.action), Some(r))
            }
            None => (None, None, None),
        }
    }

    /// One pass, no allocation: `with_dry_run` also enforces dry-run policies.
    fn pass(&self, ctx: &Ctx<'_>, with_dry_run: bool) -> Pass {
        let policies = &self.inner.policies;
        let lists = if with_dry_run {
            &self.inner.with_dry_run
        } else {
            &self.inner.enforced
        };
        let first = |a: Action| {
            let slot = action_slot(a).unwrap_or(0);
            lists[slot]
                .iter()
                .find_map(|&i| policies[i].first_match(ctx).map(|r| (i, r)))
        };
        let custom = first(Action::Custom);
        if let Some(d) = first(Action::Deny) {
            return Pass {
                verdict: Verdict::Deny,
                stage: Stage::Denied,
                decider: Some(d),
                custom,
            };
        }
        if lists[2].is_empty() {
            return Pass {
                verdict: Verdict::Allow,
                stage: Stage::Open,
                decider: None,
                custom,
            };
        }
        match first(Action::Allow) {
            Some(a) => Pass {
                verdict: Verdict::Allow,
                stage: Stage::Allowed,
                decider: Some(a),
                custom,
            },
            None => Pass {
                verdict: Verdict::Deny,
                stage: Stage::NotAllowed,
                decider: None,
                custom,
            },
        }
    }

    /// The sentence for a pass.
    fn reason(&self, ctx: &Ctx<'_>, pass: &Pass, with_dry_run: bool) -> String {
        let policies = &self.inner.policies;
        let local = match (pass.stage, pass.decider) {
            (Stage::Denied, Some((i, r))) => format!(
                "denied by DENY policy {} rule {r}: {}",
                policies[i].name,
                policies[i].rules[r].explain(ctx)
            ),
            (Stage::Allowed, Some((i, r))) => format!(
                "allowed by ALLOW policy {} rule {r}: {}",
                policies[i].name,
                policies[i].rules[r].explain(ctx)
            ),
            (Stage::Open, _) => {
                "allowed: no DENY policy matched and no ALLOW policy applies to this workload"
                    .to_string()
            }
            _ => {
                let allows: Vec<&CompiledPolicy> = policies
                    .iter()
                    .filter(|p| p.action == Action::Allow && (with_dry_run || !p.dry_run))
                    .collect();
                let names: Vec<&str> = allows.iter().map(|p| p.name.as_str()).collect();
                let n = names.len();
                let mut reason = format!(
                    "denied: {n} ALLOW {} to this workload ({}) and none matched; add a rule that matches this request or call it with an identity/path a rule allows",
                    if n == 1 { "policy applies" } else { "policies apply" },
                    names.join(", ")
                );
                let no_rules: Vec<&str> = allows
                    .iter()
                    .filter(|p| p.rule_count() == 0)
                    .map(|p| p.name.as_str())
                    .collect();
                if !no_rules.is_empty() {
                    reason.push_str(&format!(
                        "; {} {} no rules and allow{} nothing",
                        no_rules.join(", "),
                        if no_rules.len() == 1 { "has" } else { "have" },
                        if no_rules.len() == 1 { "s" } else { "" }
                    ));
                }
                if ctx.tcp {
                    let skipped: usize = allows.iter().map(|p| p.tcp_skipped_rules()).sum();
                    if skipped > 0 {
                        reason.push_str(&format!(
                            "; {skipped} ALLOW rule(s) never match on this TCP port because they use HTTP-only fields (methods, paths, hosts, requestPrincipals, request.* conditions)"
                        ));
                    }
                }
                reason
            }
        };
        let Some((i, r)) = pass.custom else {
            return local;
        };
        let p = &policies[i];
        let provider = p.provider.as_deref().unwrap_or("");
        if pass.verdict == Verdict::Allow {
            format!(
                "CUSTOM policy {} rule {r} matched ({}): the request goes to provider {provider:?}, which makes the final decision; if it allows, {local}",
                p.name,
                p.rules[r].explain(ctx),
            )
        } else {
            format!(
                "{local} (CUSTOM policy {} would also call provider {provider:?})",
                p.name
            )
        }
    }
}

impl Pass {
    /// The (policy, rule) reported as deciding: the CUSTOM rule when the
    /// request is locally allowed but goes to a provider, else the local one.
    fn reported(&self) -> Option<(usize, usize)> {
        match (self.verdict, self.custom) {
            (Verdict::Allow, Some(c)) => Some(c),
            _ => self.decider,
        }
    }
}
