//! A workload's current certificate: identity, chain, private key, trust
//! bundle and the rustls `CertifiedKey` built from them once, so TLS
//! handshakes only clone an `Arc`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::spiffe::SpiffeId;
use crate::x509;

/// A workload certificate with its key, ready for TLS.
pub struct WorkloadCertificate {
    identity: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    trust: TrustBundle,
    not_before: SystemTime,
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Builds from a chain (leaf first, then intermediates; a trailing root
    /// is harmless), the leaf's private key and the trust bundle. Checks
    /// that the leaf carries exactly one SPIFFE URI SAN and that the key
    /// matches the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        trust: TrustBundle,
    ) -> Result<Self> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::cert("workload chain", "is empty"))?;
        let identity = x509::spiffe_id(leaf)?;
        let info = x509::cert_info(leaf)?;
        let signing_key = crate::crypto::provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| Error::key("workload key", format!("rustls cannot use it: {e}")))?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        certified_key.keys_match().map_err(|e| {
            Error::key(
                "workload key",
                format!("does not match the leaf certificate: {e}"),
            )
        })?;
        Ok(WorkloadCertificate {
            identity,
            chain,
            key,
            trust,
            not_before: info.not_before,
            not_after: info.not_after,
            certified_key: Arc::new(certified_key),
        })
    }

    /// Builds from a CA response chain (`cert_chain` of
    /// `IstioCertificateResponse`: leaf, intermediates, root bundle last).
    /// The last entry is taken as the trust bundle unless `roots` is given
    /// (the response's newer `root_cert` field).
    pub fn from_ca_response(
        cert_chain: &[String],
        roots: Option<&[String]>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self> {
        let what = "CA response";
        let (chain_entries, root_entries): (&[String], Vec<&String>) = match roots {
            Some(r) if !r.is_empty() => (cert_chain, r.iter().collect()),
            _ => match cert_chain.split_last() {
                Some((last, rest)) if !rest.is_empty() => (rest, vec![last]),
                _ => {
                    return Err(Error::cert(
                        what,
                        "cert_chain must hold at least the leaf and the root",
                    ))
                }
            },
        };
        let mut chain = Vec::new();
        for pem in chain_entries {
            chain.extend(x509::certs_from_pem(pem, what)?);
        }
        let mut root_certs = Vec::new();
        for pem in root_entries {
            root_certs.extend(x509::certs_from_pem(pem, what)?);
        }
        let trust = TrustBundle::new(root_certs)?;
        // Drop roots that a CA may have left at the end of the chain.
        chain.retain(|c| !trust.contains(c));
        WorkloadCertificate::new(chain, key, trust)
    }

    /// The SPIFFE identity of the leaf.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Leaf first, then intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The private key (PKCS#8 for keys this crate generates).
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The roots that came with the certificate.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.trust
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The rustls key and chain to present in handshakes.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified_key.clone()
    }

    /// Whether the certificate is still valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// The moment `fraction` of the lifetime has passed (0.5 = half-life),
    /// when a rotator should fetch the next certificate.
    pub fn refresh_time(&self, fraction: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
    }
}
