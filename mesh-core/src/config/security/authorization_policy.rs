//! Istio `AuthorizationPolicy` (security.istio.io v1/v1beta1): the serde
//! types with every field of the API, and Istio's validation rules.
//!
//! This module only describes and checks configuration; what a policy means
//! for a request lives in [`crate::authz`].

use serde::{Deserialize, Serialize};

use crate::authz::key::ConditionKey;
use crate::authz::matcher::check_path_template;
use crate::config::common::{check_targeting, PolicyTargetReference, WorkloadSelector};
use crate::config::validate::{each, field, Issues, Validate};

/// Access control for the workloads a policy selects: which requests are
/// allowed, denied, audited or sent to an external authorizer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Workloads (by label) the policy applies to. Without a selector (and
    /// without target references) the policy applies to every workload of its
    /// namespace, or of the whole mesh when it lives in the root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single Gateway (or Service) the policy is bound to instead of a
    /// selector. Deprecated in favour of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateways (or Services) the policy is bound to instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The rules; a request matches the policy when it matches at least one.
    /// No rules means the policy never matches (an ALLOW policy without rules
    /// therefore denies everything it selects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What happens to a matching request. Defaults to ALLOW.
    #[serde(default)]
    pub action: Action,
    /// The extension provider a CUSTOM policy delegates to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// The action of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow a request only if it matches a rule (of any ALLOW policy).
    #[default]
    Allow,
    /// Deny a request if it matches a rule.
    Deny,
    /// Mark a matching request for auditing; never changes the decision.
    Audit,
    /// Delegate the decision for matching requests to an extension provider.
    Custom,
}

impl Action {
    /// The name as written in YAML (`ALLOW`, `DENY`, `AUDIT`, `CUSTOM`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The extension provider of a CUSTOM policy (defined in MeshConfig
/// `extensionProviders`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Name of the provider in MeshConfig `extensionProviders`.
    #[serde(default)]
    pub name: String,
}

/// One rule: at least one `from`, at least one `to` and every `when` must
/// match. A missing list matches anything, so `{}` matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources; any one may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<From>,
    /// Operations; any one may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<To>,
    /// Conditions; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A `from` entry: wraps one source.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    /// The source of the request.
    #[serde(default)]
    pub source: Source,
}

/// Who sends the request. Fields are ANDed; values inside a field are ORed;
/// `notX` fields match when none of their values matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities from the mTLS certificate,
    /// `<trust-domain>/ns/<ns>/sa/<sa>` (a `spiffe://` prefix is accepted).
    /// `*` means "any authenticated peer".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Peer identities that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT identities `<iss>/<sub>`; `*` means "any authenticated request".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// JWT identities that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer, taken from its mTLS identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Peer namespaces that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Kubernetes service accounts of the peer as `<ns>/<sa>` (or `<sa>`, in
    /// the policy's namespace), independent of the trust domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Service accounts that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// IPs or CIDRs of the direct peer (`source.ip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Direct peer IPs or CIDRs that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// IPs or CIDRs of the original client, from X-Forwarded-For or the PROXY
    /// protocol (`remote.ip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Original client IPs or CIDRs that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// A `to` entry: wraps one operation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// The operation of the request.
    #[serde(default)]
    pub operation: Operation,
}

/// What the request does. Fields are ANDed; values inside a field are ORed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Host (`:authority`) values, matched case-insensitively. HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings of digits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Destination ports that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (gRPC is always `POST`). HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Methods that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Normalized paths without the query: exact, `prefix*`, `*suffix`, `*`,
    /// or templates with `{*}` (one segment) and `{**}` (the rest). HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An extra condition on a request attribute named by `key`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute, e.g. `request.headers[x-token]`, `source.ip`,
    /// `request.auth.claims[groups]`.
    #[serde(default)]
    pub key: String,
    /// Values the attribute must match (any one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Values the attribute must not match (none of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl Source {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.request_principals.is_empty()
            && self.not_request_principals.is_empty()
            && self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.ip_blocks.is_empty()
            && self.not_ip_blocks.is_empty()
            && self.remote_ip_blocks.is_empty()
            && self.not_remote_ip_blocks.is_empty()
    }
}

impl Operation {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.ports.is_empty()
            && self.not_ports.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty()
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_targeting(
            path,
            &self.selector,
            &self.target_ref,
            &self.target_refs,
            issues,
        );
        for (i, t) in self.target_refs.iter().enumerate() {
            check_target_kind(t, &format!("{}[{i}]", field(path, "targetRefs")), issues);
        }
        if let Some(t) = &self.target_ref {
            check_target_kind(t, &field(path, "targetRef"), issues);
        }

        let provider_name = self.provider.as_ref().map(|p| p.name.as_str());
        match (self.action, provider_name) {
            (Action::Custom, None) | (Action::Custom, Some("")) => issues.push(
                field(path, "provider"),
                "action CUSTOM requires provider.name: name the MeshConfig extensionProviders entry that decides these requests",
            ),
            (Action::Custom, Some(_)) => {}
            (other, Some(_)) => issues.push(
                field(path, "provider"),
                format!("provider is only allowed with action CUSTOM (this policy's action is {other}); remove provider or set action: CUSTOM"),
            ),
            (_, None) => {}
        }

        let rules_path = field(path, "rules");
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("{rules_path}[{i}]"), issues);
        }
    }
}

/// The targetRef kinds an AuthorizationPolicy accepts (Gateway, Service,
/// ServiceEntry, GatewayClass; GatewayClass only from the root namespace,
/// which validation cannot see, so it is accepted here).
fn check_target_kind(t: &PolicyTargetReference, path: &str, issues: &mut Issues) {
    if let Some(ns) = &t.namespace {
        if ns.is_empty() {
            issues.push(
                field(path, "namespace"),
                "targetRef.namespace must not be empty; leave it out to use the policy's namespace",
            );
        }
    }
}

impl Validate for Rule {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let from_path = field(path, "from");
        for (i, from) in self.from.iter().enumerate() {
            from.source
                .validate(&format!("{from_path}[{i}].source"), issues);
        }
        let to_path = field(path, "to");
        for (i, to) in self.to.iter().enumerate() {
            to.operation
                .validate(&format!("{to_path}[{i}].operation"), issues);
        }
        each(&self.when, &field(path, "when"), issues);
    }
}

/// Records an error for every empty string in a list.
fn check_no_empty(values: &[String], path: &str, name: &str, issues: &mut Issues) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            issues.push(
                format!("{}[{i}]", field(path, name)),
                format!("empty value in {name}; remove it or write the value to match (use \"*\" to match any non-empty value)"),
            );
        }
    }
}

fn check_ip_blocks(values: &[String], path: &str, name: &str, issues: &mut Issues) {
    for (i, v) in values.iter().enumerate() {
        if !v.is_empty() && crate::authz::matcher::parse_ip_block(v).is_none() {
            issues.push(
                format!("{}[{i}]", field(path, name)),
                format!("{v:?} in {name} is neither an IP address nor a CIDR; write e.g. 10.1.2.3 or 10.1.0.0/16"),
            );
        }
    }
}

fn check_ports(values: &[String], path: &str, name: &str, issues: &mut Issues) {
    for (i, v) in values.iter().enumerate() {
        if !v.is_empty() && v.parse::<u16>().is_err() {
            issues.push(
                format!("{}[{i}]", field(path, name)),
                format!("{v:?} in {name} is not a port number; write a number from 0 to 65535 (wildcards and ranges are not supported)"),
            );
        }
    }
}

impl Validate for Source {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.is_empty() {
            issues.push(
                path,
                "source must not be empty; set at least one field (principals, namespaces, ipBlocks, ...) or remove this from entry",
            );
        }
        let lists: [(&str, &[String]); 12] = [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ];
        for (name, values) in lists {
            check_no_empty(values, path, name, issues);
        }
        check_ip_blocks(&self.ip_blocks, path, "ipBlocks", issues);
        check_ip_blocks(&self.not_ip_blocks, path, "notIpBlocks", issues);
        check_ip_blocks(&self.remote_ip_blocks, path, "remoteIpBlocks", issues);
        check_ip_blocks(
            &self.not_remote_ip_blocks,
            path,
            "notRemoteIpBlocks",
            issues,
        );

        let has_sa = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let has_identity = !self.principals.is_empty()
            || !self.not_principals.is_empty()
            || !self.namespaces.is_empty()
            || !self.not_namespaces.is_empty();
        if has_sa && has_identity {
            issues.push(
                path,
                "serviceAccounts/notServiceAccounts cannot be combined with principals or namespaces (or their not forms) in one source; use a separate from entry",
            );
        }
        for (name, values) in [
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
        ] {
            if values.len() > 16 {
                issues.push(
                    field(path, name),
                    format!("{name} has {} entries; at most 16 are allowed, split them over several from entries", values.len()),
                );
            }
            for (i, v) in values.iter().enumerate() {
                let p = format!("{}[{i}]", field(path, name));
                if v.contains('*') {
                    issues.push(&p, format!("{v:?}: wildcards are not supported in {name}; list each service account as <namespace>/<name>"));
                } else if v.len() > 320 {
                    issues.push(
                        &p,
                        format!(
                            "{name} entry is {} characters long; at most 320 are allowed",
                            v.len()
                        ),
                    );
                } else if !v.is_empty() {
                    let parts: Vec<&str> = v.split('/').collect();
                    if parts.len() > 2 || parts.iter().any(|s| s.is_empty()) {
                        issues.push(&p, format!("{v:?} is not a service account; write <namespace>/<name> or <name> (in the policy's namespace)"));
                    }
                }
            }
        }
    }
}

impl Validate for Operation {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.is_empty() {
            issues.push(
                path,
                "operation must not be empty; set at least one field (paths, methods, ports, hosts, ...) or remove this to entry",
            );
        }
        let lists: [(&str, &[String]); 8] = [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ];
        for (name, values) in lists {
            check_no_empty(values, path, name, issues);
        }
        check_ports(&self.ports, path, "ports", issues);
        check_ports(&self.not_ports, path, "notPorts", issues);
        for (name, values) in [("paths", &self.paths), ("notPaths", &self.not_paths)] {
            for (i, v) in values.iter().enumerate() {
                if let Err(why) = check_path_template(v) {
                    issues.push(format!("{}[{i}]", field(path, name)), why);
                }
            }
        }
    }
}

impl Validate for Condition {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let key_path = field(path, "key");
        if self.key.is_empty() {
            issues.push(key_path, "when.key is required; name an attribute such as request.headers[x-user] or source.ip");
            return;
        }
        if self.values.is_empty() && self.not_values.is_empty() {
            issues.push(
                path,
                format!(
                    "condition on {} has neither values nor notValues; set at least one",
                    self.key
                ),
            );
        }
        let key = match ConditionKey::parse(&self.key) {
            Ok(k) => k,
            Err(why) => {
                issues.push(key_path, why);
                return;
            }
        };
        for (name, values) in [("values", &self.values), ("notValues", &self.not_values)] {
            check_no_empty(values, path, name, issues);
            for (i, v) in values.iter().enumerate() {
                if v.is_empty() {
                    continue;
                }
                if let Err(why) = key.check_value(v) {
                    issues.push(format!("{}[{i}]", field(path, name)), why);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::load_str;

    fn errors(spec: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
        );
        let r = load_str(&text, "t.yaml");
        r.errors
            .iter()
            .map(|e| format!("{} {}", e.field.as_deref().unwrap_or(""), e.message))
            .collect()
    }

    fn ok(spec: &str) {
        let e = errors(spec);
        assert!(e.is_empty(), "unexpected errors: {e:#?}");
    }

    fn err(spec: &str, path: &str, needle: &str) {
        let e = errors(spec);
        assert!(
            e.iter().any(|m| m.starts_with(path) && m.contains(needle)),
            "expected error at {path} containing {needle:?}, got {e:#?}"
        );
    }

    #[test]
    fn full_policy_parses() {
        ok(r#"  selector: {matchLabels: {app: a}}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/a/sa/b", "spiffe://td/ns/x/*"]
        notPrincipals: ["*"]
        requestPrincipals: ["iss/sub"]
        notRequestPrincipals: ["*"]
        namespaces: ["a"]
        notNamespaces: ["b"]
        ipBlocks: ["10.0.0.0/8", "1.2.3.4"]
        notIpBlocks: ["::1"]
        remoteIpBlocks: ["2001:db8::/32"]
        notRemoteIpBlocks: ["5.6.7.8/32"]
    - source:
        serviceAccounts: ["ns/sa", "sa-only"]
        notServiceAccounts: ["other/sa"]
    to:
    - operation:
        hosts: ["*.example.com"]
        notHosts: ["a.example.com"]
        ports: ["8080"]
        notPorts: ["9090"]
        methods: ["GET"]
        notMethods: ["DELETE"]
        paths: ["/api/{*}/items/{**}", "/x*"]
        notPaths: ["*/admin"]
    when:
    - key: request.headers[X-Token]
      values: ["abc*"]
    - key: request.auth.claims[groups][admin]
      notValues: ["x"]
    - key: source.ip
      values: ["10.0.0.1"]
    - key: destination.port
      values: ["80"]
"#);
    }

    #[test]
    fn unknown_fields_rejected() {
        err(
            "  rules:\n  - to:\n    - operation: {path: [\"/a\"]}\n",
            "spec.rules[0].to[0].operation",
            "path",
        );
    }

    #[test]
    fn custom_needs_provider_and_provider_needs_custom() {
        err(
            "  action: CUSTOM\n  rules: [{}]\n",
            "spec.provider",
            "requires provider.name",
        );
        ok("  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n");
        err(
            "  action: DENY\n  provider: {name: ext}\n  rules: [{}]\n",
            "spec.provider",
            "only allowed with action CUSTOM",
        );
    }

    #[test]
    fn selector_and_target_ref_exclusive() {
        err(
            "  selector: {matchLabels: {app: a}}\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n",
            "spec",
            "only one of selector",
        );
    }

    #[test]
    fn empty_source_operation_and_values() {
        err(
            "  rules:\n  - from: [{source: {}}]\n",
            "spec.rules[0].from[0].source",
            "must not be empty",
        );
        err(
            "  rules:\n  - to: [{operation: {}}]\n",
            "spec.rules[0].to[0].operation",
            "must not be empty",
        );
        err(
            "  rules:\n  - to: [{operation: {methods: [\"\"]}}]\n",
            "spec.rules[0].to[0].operation.methods[0]",
            "empty value",
        );
    }

    #[test]
    fn ip_blocks_and_ports_well_formed() {
        err(
            "  rules:\n  - from: [{source: {ipBlocks: [\"10.0.0.0/33\"]}}]\n",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "neither an IP",
        );
        err(
            "  rules:\n  - from: [{source: {notRemoteIpBlocks: [\"abc\"]}}]\n",
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
            "neither an IP",
        );
        err(
            "  rules:\n  - to: [{operation: {ports: [\"80\", \"http\"]}}]\n",
            "spec.rules[0].to[0].operation.ports[1]",
            "not a port",
        );
        err(
            "  rules:\n  - to: [{operation: {notPorts: [\"70000\"]}}]\n",
            "spec.rules[0].to[0].operation.notPorts[0]",
            "not a port",
        );
    }

    #[test]
    fn path_templates_well_formed() {
        ok("  rules:\n  - to: [{operation: {paths: [\"/a/{*}/b/{**}\", \"/{**}\"]}}]\n");
        err(
            "  rules:\n  - to: [{operation: {paths: [\"/a/{**}/b\"]}}]\n",
            "spec.rules[0].to[0].operation.paths[0]",
            "{**} must be the last",
        );
        err(
            "  rules:\n  - to: [{operation: {notPaths: [\"/a/x{*}\"]}}]\n",
            "spec.rules[0].to[0].operation.notPaths[0]",
            "whole path segment",
        );
        err(
            "  rules:\n  - to: [{operation: {paths: [\"/a/{*}*\"]}}]\n",
            "spec.rules[0].to[0].operation.paths[0]",
            "whole path segment",
        );
    }

    #[test]
    fn service_accounts_rules() {
        err(
            "  rules:\n  - from: [{source: {serviceAccounts: [\"a/b\"], principals: [\"x\"]}}]\n",
            "spec.rules[0].from[0].source",
            "cannot be combined",
        );
        err(
            "  rules:\n  - from: [{source: {notServiceAccounts: [\"a/b\"], notNamespaces: [\"x\"]}}]\n",
            "spec.rules[0].from[0].source",
            "cannot be combined",
        );
        err(
            "  rules:\n  - from: [{source: {serviceAccounts: [\"a/*\"]}}]\n",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "wildcards",
        );
        err(
            "  rules:\n  - from: [{source: {serviceAccounts: [\"a/b/c\"]}}]\n",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "not a service account",
        );
    }

    #[test]
    fn conditions() {
        err(
            "  rules:\n  - when: [{key: source.ip}]\n",
            "spec.rules[0].when[0]",
            "neither values nor notValues",
        );
        err(
            "  rules:\n  - when: [{key: \"request.header[x]\", values: [a]}]\n",
            "spec.rules[0].when[0].key",
            "unknown",
        );
        err(
            "  rules:\n  - when: [{key: \"request.headers[]\", values: [a]}]\n",
            "spec.rules[0].when[0].key",
            "header name",
        );
        err(
            "  rules:\n  - when: [{key: source.ip, values: [\"nope\"]}]\n",
            "spec.rules[0].when[0].values[0]",
            "IP",
        );
        err(
            "  rules:\n  - when: [{key: destination.port, notValues: [\"x\"]}]\n",
            "spec.rules[0].when[0].notValues[0]",
            "port",
        );
        err(
            "  rules:\n  - when: [{key: \"request.auth.claims[a][\", values: [x]}]\n",
            "spec.rules[0].when[0].key",
            "claims",
        );
        ok("  rules:\n  - when: [{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [x]}]\n");
        ok("  rules:\n  - when: [{key: connection.sni, values: [\"*.example.com\"]}]\n");
    }
}
