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
    normalization: Normalization,
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
                &self.inner.policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("normalization", &self.inner.normalization)
            .finish()
    }
}

/// The result of one pass over the policies.
struct Outcome {
    verdict: Verdict,
    decider: Option<(usize, usize)>,
    reason: String,
    custom: Option<(usize, usize)>,
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
        Self {
            inner: Arc::new(Inner {
                policies,
                normalization,
            }),
        }
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

    /// Authorizes one request.
    pub fn evaluate(&self, req: &Request) -> Decision {
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
        let out = self.decide(&ctx, false);
        let policies = &self.inner.policies;

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
            let d = self.decide(&ctx, true);
            let (policy, action, rule_index) = self.decider_fields(d.decider);
            DryRun {
                decision: d.verdict,
                policy,
                action,
                rule_index,
                reason: d.reason,
            }
        });

        let (policy, action, rule_index) = self.decider_fields(out.decider);
        let custom_provider = out
            .custom
            .filter(|_| out.verdict == Verdict::Allow)
            .map(|(p, _)| policies[p].provider.clone().unwrap_or_default());
        Decision {
            decision: out.verdict,
            policy,
            action,
            rule_index,
            reason: out.reason,
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

    /// One pass: `with_dry_run` also enforces dry-run policies.
    fn decide(&self, ctx: &Ctx<'_>, with_dry_run: bool) -> Outcome {
        let policies = &self.inner.policies;
        let active = |p: &CompiledPolicy, a: Action| p.action == a && (with_dry_run || !p.dry_run);

        let custom = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| active(p, Action::Custom))
            .find_map(|(i, p)| p.first_match(ctx).map(|r| (i, r)));

        for (i, p) in policies.iter().enumerate() {
            if !active(p, Action::Deny) {
                continue;
            }
            if let Some(r) = p.first_match(ctx) {
                let why = p.rules[r].explain(ctx);
                return Outcome {
                    verdict: Verdict::Deny,
                    decider: Some((i, r)),
                    reason: format!("denied by DENY policy {} rule {r}: {why}", p.name),
                    custom,
                };
            }
        }

        let allows: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| active(p, Action::Allow))
            .map(|(i, _)| i)
            .collect();
        let allow_match = allows
            .iter()
            .find_map(|&i| policies[i].first_match(ctx).map(|r| (i, r)));

        let local = match (allows.is_empty(), allow_match) {
            (true, _) => Outcome {
                verdict: Verdict::Allow,
                decider: None,
                reason: "allowed: no DENY policy matched and no ALLOW policy applies to this workload".to_string(),
                custom: None,
            },
            (false, Some((i, r))) => {
                let p = &policies[i];
                Outcome {
                    verdict: Verdict::Allow,
                    decider: Some((i, r)),
                    reason: format!(
                        "allowed by ALLOW policy {} rule {r}: {}",
                        p.name,
                        p.rules[r].explain(ctx)
                    ),
                    custom: None,
                }
            }
            (false, None) => {
                let names: Vec<&str> = allows.iter().map(|&i| policies[i].name.as_str()).collect();
                let n = names.len();
                let mut reason = format!(
                    "denied: {n} ALLOW {} to this workload ({}) and none matched; add a rule that matches this request or call it with an identity/path a rule allows",
                    if n == 1 { "policy applies" } else { "policies apply" },
                    names.join(", ")
                );
                let no_rules: Vec<&str> = allows
                    .iter()
                    .map(|&i| &policies[i])
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
                    let skipped: usize = allows.iter().map(|&i| policies[i].tcp_skipped_rules()).sum();
                    if skipped > 0 {
                        reason.push_str(&format!(
                            "; {skipped} ALLOW rule(s) never match on this TCP port because they use HTTP-only fields (methods, paths, hosts, requestPrincipals, request.* conditions)"
                        ));
                    }
                }
                Outcome {
                    verdict: Verdict::Deny,
                    decider: None,
                    reason,
                    custom: None,
                }
            }
        };

        let Some((i, r)) = custom else {
            return local;
        };
        let p = &policies[i];
        let provider = p.provider.as_deref().unwrap_or("");
        if local.verdict == Verdict::Allow {
            Outcome {
                verdict: Verdict::Allow,
                decider: Some((i, r)),
                reason: format!(
                    "CUSTOM policy {} rule {r} matched ({}): the request goes to provider {provider:?}, which makes the final decision; if it allows, {}",
                    p.name,
                    p.rules[r].explain(ctx),
                    local.reason
                ),
                custom,
            }
        } else {
            Outcome {
                reason: format!(
                    "{} (CUSTOM policy {} would also call provider {provider:?})",
                    local.reason, p.name
                ),
                custom,
                ..local
            }
        }
    }
}
