//! SPIFFE workload identities as Istio issues them:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Authorization policies write the same identity without the scheme
//! (`cluster.local/ns/default/sa/sleep`); [`SpiffeId::parse_principal`]
//! accepts both forms. Parts follow the SPIFFE spec: a trust domain of
//! lowercase letters, digits, `.`, `-`, `_`; namespace and service account
//! of letters, digits, `.`, `-`, `_` (not `.` or `..`). This module parses,
//! formats and compares identities across trust-domain aliases; it does
//! not verify certificates (that is `mesh-ca`'s job, which re-exports this
//! type so there is one implementation).

use std::fmt;
use std::str::FromStr;

/// The URI scheme prefix of a SPIFFE ID.
pub const SCHEME: &str = "spiffe://";

/// An Istio workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not an Istio SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE identity {input:?}: {why}; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
pub struct SpiffeError {
    /// The text given.
    pub input: String,
    /// What was wrong.
    pub why: &'static str,
}

impl SpiffeId {
    /// Builds an identity from its parts.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeError> {
        let id = Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        let err = |why| SpiffeError {
            input: id.to_string(),
            why,
        };
        if id.trust_domain.is_empty() {
            return Err(err("the trust domain is empty"));
        }
        if id.namespace.is_empty() {
            return Err(err("the namespace is empty"));
        }
        if id.service_account.is_empty() {
            return Err(err("the service account is empty"));
        }
        for part in [&id.trust_domain, &id.namespace, &id.service_account] {
            if part.contains('/') {
                return Err(err("a part contains '/'"));
            }
        }
        if !valid_trust_domain(&id.trust_domain) {
            return Err(err(
                "the trust domain may only hold lowercase letters, digits, '.', '-' and '_'",
            ));
        }
        for part in [&id.namespace, &id.service_account] {
            if !valid_segment(part) {
                return Err(err("namespace and service account may only hold letters, digits, '.', '-' and '_' (and not be '.' or '..')"));
            }
        }
        Ok(id)
    }

    /// Parses a full SPIFFE URI (`spiffe://td/ns/NS/sa/SA`).
    pub fn parse(uri: &str) -> Result<Self, SpiffeError> {
        match uri.strip_prefix(SCHEME) {
            Some(rest) => Self::parse_parts(uri, rest),
            None => Err(SpiffeError {
                input: uri.to_string(),
                why: "it does not start with spiffe://",
            }),
        }
    }

    /// Parses a principal as written in an AuthorizationPolicy: with or
    /// without the `spiffe://` prefix.
    pub fn parse_principal(principal: &str) -> Result<Self, SpiffeError> {
        let rest = principal.strip_prefix(SCHEME).unwrap_or(principal);
        Self::parse_parts(principal, rest)
    }

    fn parse_parts(input: &str, rest: &str) -> Result<Self, SpiffeError> {
        let err = |why| SpiffeError {
            input: input.to_string(),
            why,
        };
        let mut it = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(err("the path is not /ns/<namespace>/sa/<service-account>"));
        };
        Self::new(td, ns, sa).map_err(|e| err(e.why))
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The same namespace and service account in another trust domain.
    pub fn with_trust_domain(&self, trust_domain: &str) -> Result<Self, SpiffeError> {
        Self::new(trust_domain, &*self.namespace, &*self.service_account)
    }

    /// True when both ids name the same namespace and service account and
    /// both trust domains are in `trust_domains` (the local trust domain
    /// and its aliases). Equal ids always match.
    pub fn matches_across(&self, other: &SpiffeId, trust_domains: &[String]) -> bool {
        if self == other {
            return true;
        }
        self.namespace == other.namespace
            && self.service_account == other.service_account
            && trust_domains.contains(&self.trust_domain)
            && trust_domains.contains(&other.trust_domain)
    }

    /// The principal form used in policies: `td/ns/NS/sa/SA` (no scheme).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    /// Accepts both the URI and the principal form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_principal(s)
    }
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks that a trust domain name is acceptable to SPIFFE.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeError> {
    if valid_trust_domain(td) {
        Ok(())
    } else {
        Err(SpiffeError {
            input: format!("{SCHEME}{td}"),
            why: "the trust domain must be non-empty and hold only lowercase letters, digits, '.', '-' and '_'",
        })
    }
}

/// Strips the `spiffe://` scheme if present: the form policies compare.
pub fn strip_scheme(principal: &str) -> &str {
    principal.strip_prefix(SCHEME).unwrap_or(principal)
}

/// The namespace and service account inside a principal (with or without
/// scheme), without allocating; `None` when it is not of Istio's form.
pub fn ns_and_sa(principal: &str) -> Option<(&str, &str)> {
    let rest = strip_scheme(principal);
    let mut it = rest.split('/');
    match (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) {
        (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
        {
            Some((ns, sa))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/sleep").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "sleep");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/sleep");
        let p = SpiffeId::parse_principal("cluster.local/ns/default/sa/sleep").unwrap();
        assert_eq!(p, id);
        assert_eq!("td/ns/a/sa/b".parse::<SpiffeId>().unwrap().namespace(), "a");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "cluster.local/ns/default/sa/sleep", // parse() needs the scheme
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns//sa/x",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/namespace/a/sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        let e = SpiffeId::parse_principal("x/y").unwrap_err();
        assert!(e.to_string().contains("expected spiffe://"));
        assert!(SpiffeId::new("td", "a/b", "c").is_err());
    }

    #[test]
    fn spiffe_spec_characters() {
        for bad in [
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://td/ns/../sa/b",
            "spiffe://td/ns/./sa/b",
            "spiffe://td/ns/a%2F/sa/b",
            "spiffe://td/ns/a b/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(SpiffeId::parse("spiffe://td-1.example_x/ns/A.b-c_d/sa/Sa1").is_ok());
        assert!(validate_trust_domain("cluster.local").is_ok());
        assert!(validate_trust_domain("").is_err());
        assert!(validate_trust_domain("UPPER").is_err());
    }

    #[test]
    fn alias_matching() {
        let a = SpiffeId::parse("spiffe://new.td/ns/a/sa/b").unwrap();
        let b = SpiffeId::parse("spiffe://old.td/ns/a/sa/b").unwrap();
        let tds = vec!["new.td".to_string(), "old.td".to_string()];
        assert!(a.matches_across(&b, &tds));
        assert!(!a.matches_across(&b, &tds[..1]));
        let c = SpiffeId::parse("spiffe://old.td/ns/a/sa/c").unwrap();
        assert!(!a.matches_across(&c, &tds));
        assert_eq!(b.with_trust_domain("new.td").unwrap(), a);
        assert!(a.with_trust_domain("Bad").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(strip_scheme("spiffe://a/ns/b/sa/c"), "a/ns/b/sa/c");
        assert_eq!(strip_scheme("a/ns/b/sa/c"), "a/ns/b/sa/c");
        assert_eq!(ns_and_sa("spiffe://a/ns/b/sa/c"), Some(("b", "c")));
        assert_eq!(ns_and_sa("a/ns/b/sa/c"), Some(("b", "c")));
        assert_eq!(ns_and_sa("a/ns/b"), None);
    }
}
