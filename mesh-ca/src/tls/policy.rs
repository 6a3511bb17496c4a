//! Which peer identities a TLS endpoint accepts: the local trust domain and
//! its aliases, optionally narrowed to a set of exact identities (the
//! client-side pin, Istio's `subjectAltNames`).

use crate::spiffe::SpiffeId;

/// Why a peer's identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdentityError {
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The peer certificate carries no usable SPIFFE id.
    #[error("the peer certificate carries no usable SPIFFE identity: {0}")]
    NoIdentity(String),
    /// The identity's trust domain is neither local nor an alias.
    #[error("peer {peer} is in trust domain {:?}, not in the accepted {accepted:?} (add it to the trust-domain aliases to accept it)", peer.trust_domain())]
    UntrustedDomain {
        /// The peer identity.
        peer: SpiffeId,
        /// The accepted trust domains.
        accepted: Vec<String>,
    },
    /// The identity is not one the endpoint pinned.
    #[error("peer {peer} is not one of the expected identities {expected:?}")]
    NotExpected {
        /// The peer identity.
        peer: SpiffeId,
        /// The pinned identities.
        expected: Vec<String>,
    },
}

/// Identity rules applied after chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The local trust domain.
    pub trust_domain: String,
    /// Other trust domains treated as the local one (Istio's
    /// `trustDomainAliases`, used while migrating trust domains).
    pub trust_domain_aliases: Vec<String>,
    /// When non-empty, the peer must be one of these (compared across the
    /// trust domain and its aliases). Empty accepts any identity in the
    /// accepted trust domains.
    pub expected_identities: Vec<SpiffeId>,
}

impl PeerPolicy {
    /// Accepts any identity of `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        PeerPolicy {
            trust_domain: trust_domain.into(),
            trust_domain_aliases: Vec::new(),
            expected_identities: Vec::new(),
        }
    }

    /// Also accepts these trust domains as equivalent to the local one.
    pub fn with_aliases(mut self, aliases: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.trust_domain_aliases
            .extend(aliases.into_iter().map(Into::into));
        self
    }

    /// Requires the peer to be one of `ids`.
    pub fn expect_identities(mut self, ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        self.expected_identities.extend(ids);
        self
    }

    /// The local trust domain followed by its aliases.
    pub fn trust_domains(&self) -> Vec<String> {
        let mut all = vec![self.trust_domain.clone()];
        all.extend(self.trust_domain_aliases.iter().cloned());
        all
    }

    /// Checks a verified peer identity against the policy.
    pub fn check(&self, peer: &SpiffeId) -> Result<(), PeerIdentityError> {
        let domains = self.trust_domains();
        if !domains.iter().any(|d| d == peer.trust_domain()) {
            return Err(PeerIdentityError::UntrustedDomain {
                peer: peer.clone(),
                accepted: domains,
            });
        }
        if !self.expected_identities.is_empty()
            && !self
                .expected_identities
                .iter()
                .any(|e| e.matches_across(peer, &domains))
        {
            return Err(PeerIdentityError::NotExpected {
                peer: peer.clone(),
                expected: self
                    .expected_identities
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn domains_aliases_and_pins() {
        let p = PeerPolicy::new("td");
        assert!(p.check(&id("spiffe://td/ns/a/sa/b")).is_ok());
        assert!(matches!(
            p.check(&id("spiffe://other/ns/a/sa/b")),
            Err(PeerIdentityError::UntrustedDomain { .. })
        ));
        let p = p.with_aliases(["other"]);
        assert!(p.check(&id("spiffe://other/ns/a/sa/b")).is_ok());
        let p = p.expect_identities([id("spiffe://td/ns/a/sa/b")]);
        assert!(p.check(&id("spiffe://other/ns/a/sa/b")).is_ok());
        assert!(matches!(
            p.check(&id("spiffe://td/ns/a/sa/c")),
            Err(PeerIdentityError::NotExpected { .. })
        ));
    }
}
