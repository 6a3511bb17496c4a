//! SPIFFE workload identities of the form
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! This is the only identity shape the mesh issues and accepts (the one Istio
//! uses). The type is deliberately local to `mesh-ca` for now; it parses and
//! formats identities and compares them across trust-domain aliases. It does
//! not decide what an identity may do (that is authorization, elsewhere).

use std::fmt;
use std::str::FromStr;

/// Why a string is not an acceptable SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("SPIFFE id {0:?} must start with \"spiffe://\"")]
    Scheme(String),
    /// The trust domain is empty or has characters SPIFFE does not allow.
    #[error("SPIFFE id {id:?}: invalid trust domain {td:?} (use lowercase letters, digits, '.', '-', '_')")]
    TrustDomain {
        /// The whole id.
        id: String,
        /// The offending trust domain.
        td: String,
    },
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE id {0:?}: path must be /ns/<namespace>/sa/<service-account>")]
    Path(String),
    /// A namespace or service-account segment is empty or has invalid characters.
    #[error(
        "SPIFFE id {id:?}: invalid path segment {segment:?} (use letters, digits, '.', '-', '_')"
    )]
    Segment {
        /// The whole id.
        id: String,
        /// The offending segment.
        segment: String,
    },
}

/// A mesh workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

const SCHEME: &str = "spiffe://";

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

impl SpiffeId {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let id = SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        id.validate()?;
        Ok(id)
    }

    fn validate(&self) -> Result<(), SpiffeIdError> {
        if !valid_trust_domain(&self.trust_domain) {
            return Err(SpiffeIdError::TrustDomain {
                id: self.to_string(),
                td: self.trust_domain.clone(),
            });
        }
        for segment in [&self.namespace, &self.service_account] {
            if !valid_segment(segment) {
                return Err(SpiffeIdError::Segment {
                    id: self.to_string(),
                    segment: segment.clone(),
                });
            }
        }
        Ok(())
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_string()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeIdError::Path(s.to_string()))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => {
                let id = SpiffeId {
                    trust_domain: td.to_string(),
                    namespace: (*ns).to_string(),
                    service_account: (*sa).to_string(),
                };
                id.validate()?;
                Ok(id)
            }
            _ => Err(SpiffeIdError::Path(s.to_string())),
        }
    }

    /// The trust domain (`cluster.local` in a default Istio install).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes-style namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The same namespace and service account in another trust domain.
    pub fn with_trust_domain(&self, trust_domain: &str) -> Result<Self, SpiffeIdError> {
        SpiffeId::new(trust_domain, &*self.namespace, &*self.service_account)
    }

    /// True when both ids name the same namespace and service account and
    /// both trust domains are in `trust_domains` (the local trust domain and
    /// its aliases). Equal ids always match.
    pub fn matches_across(&self, other: &SpiffeId, trust_domains: &[String]) -> bool {
        if self == other {
            return true;
        }
        self.namespace == other.namespace
            && self.service_account == other.service_account
            && trust_domains.contains(&self.trust_domain)
            && trust_domains.contains(&other.trust_domain)
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
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// Checks that a trust domain name is acceptable to SPIFFE.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if valid_trust_domain(td) {
        Ok(())
    } else {
        Err(SpiffeIdError::TrustDomain {
            id: format!("{SCHEME}{td}"),
            td: td.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id =
            SpiffeId::parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns//sa/b",
            "spiffe://td/ns/../sa/b",
            "spiffe://td/ns/a%2F/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} accepted");
        }
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
    }
}
