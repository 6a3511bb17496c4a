//! Turns the fields of a rule into [`Cond`]itions with prebuilt matchers.
//!
//! A value that cannot be used (normally rejected by validation first) makes
//! an ALLOW rule never match (fail closed) and is dropped from DENY, AUDIT and
//! CUSTOM rules (they then match more), which is how istiod treats values it
//! cannot translate.

use super::key::ConditionKey;
use super::matcher::{parse_ip_block, PathMatch, StrMatch};
use super::policy::{Attr, Clause, Cond, Values};
use crate::config::security::authorization_policy::{Action, Condition, Operation, Source};
use crate::spiffe;

pub(crate) struct Builder<'p> {
    pub action: Action,
    pub policy_ns: &'p str,
    pub warnings: Vec<String>,
    pub never: Option<String>,
}

impl Builder<'_> {
    /// Records an unusable value: an ALLOW rule then never matches (fail
    /// closed); DENY/AUDIT/CUSTOM drop the value, so they match more (Istio's
    /// choice for a value it cannot translate).
    fn bad(&mut self, rule: usize, msg: String) {
        let msg = format!("rules[{rule}]: {msg}");
        if self.action == Action::Allow && self.never.is_none() {
            self.never = Some(msg.clone());
        }
        self.warnings.push(msg);
    }

    fn push(
        &mut self,
        out: &mut Vec<Cond>,
        attr: Attr,
        field: &str,
        raw: &[String],
        negate: bool,
        values: Values,
    ) {
        if raw.is_empty() || values.is_empty() {
            return;
        }
        out.push(Cond {
            http_only: attr.http_only(),
            attr,
            values,
            negate,
            field: field.to_string(),
            raw: raw.to_vec(),
        });
    }

    fn strs(raw: &[String]) -> Values {
        Values::Str(raw.iter().map(|v| StrMatch::parse(v)).collect())
    }

    fn principals(raw: &[String]) -> Values {
        Values::Str(
            raw.iter()
                .map(|v| StrMatch::parse(spiffe::strip_scheme(v)))
                .collect(),
        )
    }

    fn ips(&mut self, rule: usize, field: &str, raw: &[String]) -> Values {
        let mut out = Vec::new();
        for v in raw {
            match parse_ip_block(v) {
                Some(n) => out.push(n),
                None => self.bad(rule, format!("{field}: {v:?} is not an IP or CIDR")),
            }
        }
        Values::Ip(out)
    }

    fn ports(&mut self, rule: usize, field: &str, raw: &[String]) -> Values {
        let mut out = Vec::new();
        for v in raw {
            match v.parse::<u16>() {
                Ok(p) => out.push(p),
                Err(_) => self.bad(rule, format!("{field}: {v:?} is not a port")),
            }
        }
        Values::Port(out)
    }

    fn paths(&mut self, rule: usize, field: &str, raw: &[String]) -> Values {
        let mut out = Vec::new();
        for v in raw {
            match PathMatch::parse(v) {
                Ok(m) => out.push(m),
                Err(e) => self.bad(rule, format!("{field}: {e}")),
            }
        }
        Values::Path(out)
    }

    fn service_accounts(&mut self, rule: usize, field: &str, raw: &[String]) -> Values {
        let mut out = Vec::new();
        for v in raw {
            match v.split_once('/') {
                Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
                    out.push((ns.to_string(), sa.to_string()))
                }
                None if !v.is_empty() => out.push((self.policy_ns.to_string(), v.clone())),
                _ => self.bad(rule, format!("{field}: {v:?} is not <namespace>/<name>")),
            }
        }
        Values::ServiceAccount(out)
    }

    pub fn source(&mut self, rule: usize, s: &Source) -> Clause {
        let mut c = Vec::new();
        let sa = self.service_accounts(rule, "serviceAccounts", &s.service_accounts);
        let not_sa = self.service_accounts(rule, "notServiceAccounts", &s.not_service_accounts);
        let ip = self.ips(rule, "ipBlocks", &s.ip_blocks);
        let not_ip = self.ips(rule, "notIpBlocks", &s.not_ip_blocks);
        let rip = self.ips(rule, "remoteIpBlocks", &s.remote_ip_blocks);
        let not_rip = self.ips(rule, "notRemoteIpBlocks", &s.not_remote_ip_blocks);
        self.push(
            &mut c,
            Attr::Principal,
            "principals",
            &s.principals,
            false,
            Self::principals(&s.principals),
        );
        self.push(
            &mut c,
            Attr::Principal,
            "notPrincipals",
            &s.not_principals,
            true,
            Self::principals(&s.not_principals),
        );
        self.push(
            &mut c,
            Attr::Principal,
            "serviceAccounts",
            &s.service_accounts,
            false,
            sa,
        );
        self.push(
            &mut c,
            Attr::Principal,
            "notServiceAccounts",
            &s.not_service_accounts,
            true,
            not_sa,
        );
        self.push(
            &mut c,
            Attr::Namespace,
            "namespaces",
            &s.namespaces,
            false,
            Self::strs(&s.namespaces),
        );
        self.push(
            &mut c,
            Attr::Namespace,
            "notNamespaces",
            &s.not_namespaces,
            true,
            Self::strs(&s.not_namespaces),
        );
        self.push(
            &mut c,
            Attr::RequestPrincipal,
            "requestPrincipals",
            &s.request_principals,
            false,
            Self::strs(&s.request_principals),
        );
        self.push(
            &mut c,
            Attr::RequestPrincipal,
            "notRequestPrincipals",
            &s.not_request_principals,
            true,
            Self::strs(&s.not_request_principals),
        );
        self.push(&mut c, Attr::SourceIp, "ipBlocks", &s.ip_blocks, false, ip);
        self.push(
            &mut c,
            Attr::SourceIp,
            "notIpBlocks",
            &s.not_ip_blocks,
            true,
            not_ip,
        );
        self.push(
            &mut c,
            Attr::RemoteIp,
            "remoteIpBlocks",
            &s.remote_ip_blocks,
            false,
            rip,
        );
        self.push(
            &mut c,
            Attr::RemoteIp,
            "notRemoteIpBlocks",
            &s.not_remote_ip_blocks,
            true,
            not_rip,
        );
        Clause { conds: c }
    }

    pub fn operation(&mut self, rule: usize, o: &Operation) -> Clause {
        let mut c = Vec::new();
        let ports = self.ports(rule, "ports", &o.ports);
        let not_ports = self.ports(rule, "notPorts", &o.not_ports);
        let paths = self.paths(rule, "paths", &o.paths);
        let not_paths = self.paths(rule, "notPaths", &o.not_paths);
        let hosts = |raw: &[String]| Values::Host(raw.iter().map(|v| StrMatch::parse(v)).collect());
        self.push(
            &mut c,
            Attr::Host,
            "hosts",
            &o.hosts,
            false,
            hosts(&o.hosts),
        );
        self.push(
            &mut c,
            Attr::Host,
            "notHosts",
            &o.not_hosts,
            true,
            hosts(&o.not_hosts),
        );
        self.push(&mut c, Attr::Port, "ports", &o.ports, false, ports);
        self.push(
            &mut c,
            Attr::Port,
            "notPorts",
            &o.not_ports,
            true,
            not_ports,
        );
        self.push(
            &mut c,
            Attr::Method,
            "methods",
            &o.methods,
            false,
            Self::strs(&o.methods),
        );
        self.push(
            &mut c,
            Attr::Method,
            "notMethods",
            &o.not_methods,
            true,
            Self::strs(&o.not_methods),
        );
        self.push(&mut c, Attr::Path, "paths", &o.paths, false, paths);
        self.push(
            &mut c,
            Attr::Path,
            "notPaths",
            &o.not_paths,
            true,
            not_paths,
        );
        Clause { conds: c }
    }

    pub fn condition(&mut self, rule: usize, cond: &Condition, out: &mut Vec<Cond>) {
        let key = match ConditionKey::parse(&cond.key) {
            Ok(k) => k,
            Err(e) => {
                self.bad(rule, e);
                return;
            }
        };
        for (negate, raw) in [(false, &cond.values), (true, &cond.not_values)] {
            let field = format!(
                "{} {}",
                cond.key,
                if negate { "notValues" } else { "values" }
            );
            let (attr, values) = match &key {
                ConditionKey::RequestHeader(n) => (Attr::Header(n.clone()), Self::strs(raw)),
                ConditionKey::SourceIp => (Attr::SourceIp, self.ips(rule, &field, raw)),
                ConditionKey::RemoteIp => (Attr::RemoteIp, self.ips(rule, &field, raw)),
                ConditionKey::DestinationIp => (Attr::DestinationIp, self.ips(rule, &field, raw)),
                ConditionKey::DestinationPort => (Attr::Port, self.ports(rule, &field, raw)),
                ConditionKey::SourceNamespace => (Attr::Namespace, Self::strs(raw)),
                ConditionKey::SourcePrincipal => (Attr::Principal, Self::principals(raw)),
                ConditionKey::RequestPrincipal => (Attr::RequestPrincipal, Self::strs(raw)),
                ConditionKey::Audiences => (Attr::Audiences, Self::strs(raw)),
                ConditionKey::Presenter => (Attr::Presenter, Self::strs(raw)),
                ConditionKey::Claim(p) => (Attr::Claim(p.clone()), Self::strs(raw)),
                ConditionKey::Sni => (Attr::Sni, Self::strs(raw)),
                ConditionKey::FilterMetadata(_) => (Attr::FilterMetadata, Self::strs(raw)),
            };
            let http_only = key.http_only();
            let before = out.len();
            self.push(out, attr, &field, raw, negate, values);
            if let Some(c) = out.get_mut(before) {
                c.http_only = http_only;
            }
        }
    }
}
