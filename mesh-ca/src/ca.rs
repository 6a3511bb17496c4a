//! The certificate authority: holds the signing certificate and key, the
//! chain above it and the trust bundle, and turns a CSR plus an
//! *authenticated* identity into a workload certificate.
//!
//! The CA never trusts what a CSR asks for: only the CSR's public key is
//! used. The identity comes from the caller's authentication (see `server`),
//! and the certificate's only SAN is that identity's SPIFFE URI. Loading and
//! persisting the CA's own material lives in `ca_store`.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::spiffe::{validate_trust_domain, SpiffeId};
use crate::workload::WorkloadCertificate;
use crate::x509;

/// One hour.
const HOUR: Duration = Duration::from_secs(3600);

/// Settings of the CA.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The trust domain of every identity the CA issues (`cluster.local`).
    pub trust_domain: String,
    /// Workload certificate lifetime when the caller asks for none (24h).
    pub workload_cert_ttl: Duration,
    /// Upper bound on a requested lifetime; longer requests are capped (90 days).
    pub max_workload_cert_ttl: Duration,
    /// Lifetime of a self-signed root created on first start (10 years).
    pub root_cert_ttl: Duration,
    /// Organization written into the self-signed root's subject.
    pub organization: String,
    /// How far `notBefore` is set in the past to tolerate clock skew (1 min).
    pub backdate: Duration,
    /// Extra roots to trust and distribute, e.g. the previous root during a
    /// root rotation.
    pub additional_roots: Vec<CertificateDer<'static>>,
}

impl CaConfig {
    /// Defaults for a trust domain: 24h workload certs (max 90 days), a
    /// 10-year root, 1 minute backdating.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        CaConfig {
            trust_domain: trust_domain.into(),
            workload_cert_ttl: 24 * HOUR,
            max_workload_cert_ttl: 90 * 24 * HOUR,
            root_cert_ttl: 10 * 365 * 24 * HOUR,
            organization: "mesh".to_string(),
            backdate: Duration::from_secs(60),
            additional_roots: Vec::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_trust_domain(&self.trust_domain)?;
        if self.workload_cert_ttl.is_zero() || self.max_workload_cert_ttl.is_zero() {
            return Err(Error::Config(
                "workload certificate TTLs must be positive".into(),
            ));
        }
        if self.workload_cert_ttl > self.max_workload_cert_ttl {
            return Err(Error::Config(format!(
                "default workload TTL {:?} exceeds the maximum {:?}",
                self.workload_cert_ttl, self.max_workload_cert_ttl
            )));
        }
        if self.root_cert_ttl < self.max_workload_cert_ttl {
            return Err(Error::Config(
                "root TTL must be at least the maximum workload TTL".into(),
            ));
        }
        Ok(())
    }
}

/// A certificate the CA just issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The identity written into the certificate.
    pub identity: SpiffeId,
    /// The leaf certificate, DER.
    pub leaf: CertificateDer<'static>,
    /// The response chain as Istio returns it: the leaf PEM first, then each
    /// intermediate, then the whole root bundle as one PEM entry.
    pub chain_pem: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// A certificate authority able to sign workload certificates.
pub struct CertificateAuthority {
    config: CaConfig,
    issuer: Issuer<'static, KeyPair>,
    signing_cert: CertificateDer<'static>,
    signing_not_after: SystemTime,
    /// Certificates between the leaf and the roots, starting with the
    /// signing certificate (empty when the signing certificate is a root).
    intermediates: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.config.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.bundle.roots().len())
            .finish_non_exhaustive()
    }
}

/// Random positive 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    crate::crypto::random_bytes(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Generates a fresh ECDSA P-256 key pair.
pub fn generate_key() -> Result<KeyPair> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

impl CertificateAuthority {
    /// Builds a CA from its signing certificate and key, the certificates
    /// between it and the roots, and the roots. Validates that the key
    /// matches, that the signing certificate is a CA and that it chains to
    /// one of the roots.
    pub fn from_parts(
        config: CaConfig,
        signing_cert: CertificateDer<'static>,
        signing_key: KeyPair,
        chain: Vec<CertificateDer<'static>>,
        roots: TrustBundle,
    ) -> Result<Self> {
        config.validate()?;
        let what = "CA signing certificate";
        let parsed = x509::parse(signing_cert.as_ref(), what)?;
        if parsed.public_key().subject_public_key.data.as_ref() != signing_key.public_key_raw() {
            return Err(Error::key(
                "CA signing key",
                "does not match the public key of the signing certificate (wrong ca-key.pem?)",
            ));
        }
        let info = x509::cert_info(&signing_cert)?;
        if !info.is_ca {
            return Err(Error::cert(
                what,
                "is not a CA certificate (basicConstraints CA:TRUE missing)",
            ));
        }
        if info.not_after <= SystemTime::now() {
            return Err(Error::cert(
                what,
                "has expired; plug in a renewed CA certificate",
            ));
        }
        let mut intermediates = Vec::new();
        if !roots.contains(&signing_cert) {
            intermediates.push(signing_cert.clone());
            for c in chain {
                if c != signing_cert && !roots.contains(&c) && !intermediates.contains(&c) {
                    intermediates.push(c);
                }
            }
        }
        check_chain(&intermediates, &roots)?;
        let issuer = Issuer::from_ca_cert_der(&signing_cert, signing_key)
            .map_err(|e| Error::cert(what, format!("cannot be used as an issuer: {e}")))?;
        let bundle = if config.additional_roots.is_empty() {
            roots
        } else {
            roots.merged(&TrustBundle::new(config.additional_roots.clone())?)
        };
        Ok(CertificateAuthority {
            config,
            issuer,
            signing_cert,
            signing_not_after: info.not_after,
            intermediates,
            bundle,
        })
    }

    /// Creates a new self-signed root (ECDSA P-256, `root_cert_ttl`) and a CA
    /// that signs with it. Returns the CA and the root key, PKCS#8 DER, for
    /// persisting.
    pub fn new_self_signed(config: CaConfig) -> Result<(Self, PrivatePkcs8KeyDer<'static>)> {
        config.validate()?;
        let key = generate_key()?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, config.organization.clone());
        dn.push(
            DnType::CommonName,
            format!("{} root CA", config.trust_domain),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now - config.backdate);
        params.not_after = offset(now + config.root_cert_ttl);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        let roots = TrustBundle::new([der.clone()])?;
        let ca = CertificateAuthority::from_parts(config, der, key, Vec::new(), roots)?;
        Ok((ca, key_der))
    }

    /// The CA's configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The trust domain the CA issues identities in.
    pub fn trust_domain(&self) -> &str {
        &self.config.trust_domain
    }

    /// The roots workloads must trust (including `additional_roots`).
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The signing certificate (a root or an intermediate).
    pub fn signing_cert(&self) -> &CertificateDer<'static> {
        &self.signing_cert
    }

    /// Certificates a leaf's chain carries above itself, signing cert first
    /// (empty when the CA signs directly with a root).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Signs `csr_pem` for `identity` now. See [`Self::sign_csr_at`].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        requested_ttl: Option<Duration>,
    ) -> Result<IssuedCertificate> {
        self.sign_csr_at(csr_pem, identity, requested_ttl, SystemTime::now())
    }

    /// The lifetime actually granted for a requested one: the default when
    /// none is asked, capped at the configured maximum.
    pub fn effective_ttl(&self, requested: Option<Duration>) -> Duration {
        match requested {
            Some(t) if !t.is_zero() => t.min(self.config.max_workload_cert_ttl),
            _ => self.config.workload_cert_ttl,
        }
    }

    /// Signs `csr_pem` (PEM PKCS#10) for `identity`, as if the time were
    /// `now`. The CSR's signature is checked and only its public key is used;
    /// the certificate's only SAN is `identity`, key usages allow TLS client
    /// and server authentication, and `notAfter` never passes the signing
    /// certificate's.
    pub fn sign_csr_at(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        requested_ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<IssuedCertificate> {
        let public_key = csr_public_key(csr_pem)?;
        self.issue(&public_key, identity, requested_ttl, Vec::new(), now)
    }

    fn issue(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        identity: &SpiffeId,
        requested_ttl: Option<Duration>,
        dns_names: Vec<String>,
        now: SystemTime,
    ) -> Result<IssuedCertificate> {
        if identity.trust_domain() != self.config.trust_domain {
            return Err(Error::Policy(format!(
                "identity {identity} is outside the CA's trust domain {:?}",
                self.config.trust_domain
            )));
        }
        let ttl = self.effective_ttl(requested_ttl);
        let not_before = now - self.config.backdate;
        let not_after = (now + ttl).min(self.signing_not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = rcgen::string::Ia5String::try_from(identity.to_string())?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        for name in dns_names {
            // An address is an IP SAN: hostname verification of a server
            // dialed by IP (`https://127.0.0.1:15012`) looks only there.
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(rcgen::string::Ia5String::try_from(name)?),
            };
            params.subject_alt_names.push(san);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(public_key, &self.issuer)?;
        let leaf = cert.der().clone();
        let mut chain_pem = vec![cert.pem()];
        chain_pem.extend(self.intermediates.iter().map(x509::cert_to_pem));
        chain_pem.push(self.bundle.to_pem());
        tracing::info!(%identity, ttl_secs = ttl.as_secs(), "issued workload certificate");
        let info = x509::cert_info(&leaf)?;
        Ok(IssuedCertificate {
            identity: identity.clone(),
            leaf,
            chain_pem,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// Issues a certificate with a key generated here, for a server the CA
    /// runs itself (the CA's own gRPC endpoint). `dns_names` are added as DNS
    /// SANs (IP SANs for the ones that parse as addresses) next to the
    /// SPIFFE URI so standard hostname verification works.
    pub fn issue_local(
        &self,
        identity: &SpiffeId,
        dns_names: &[&str],
        ttl: Option<Duration>,
    ) -> Result<WorkloadCertificate> {
        let key = generate_key()?;
        let issued = self.issue(
            &key,
            identity,
            ttl,
            dns_names.iter().map(|s| s.to_string()).collect(),
            SystemTime::now(),
        )?;
        let mut chain = vec![issued.leaf];
        chain.extend(self.intermediates.iter().cloned());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        WorkloadCertificate::new(chain, key_der, self.bundle.clone())
    }
}

/// Parses a PEM CSR, checks its self-signature and returns its public key.
pub(crate) fn csr_public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| Error::Csr(format!("expected a PEM \"CERTIFICATE REQUEST\" block: {e}")))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| Error::Csr(format!("not a PKCS#10 request: {e}")))?;
    csr.verify_signature()
        .map_err(|_| Error::Csr("signature does not verify with the request's own key".into()))?;
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| Error::Csr(format!("unsupported public key: {e}")))
}

/// Checks that `chain[0]` (if any) chains through the rest to a root of
/// `roots`, each link's signature verifying with its issuer's key.
fn check_chain(chain: &[CertificateDer<'static>], roots: &TrustBundle) -> Result<()> {
    let Some(first) = chain.first() else {
        return Ok(());
    };
    let parsed_roots = roots
        .roots()
        .iter()
        .map(|r| x509::parse(r.as_ref(), "root-cert.pem"))
        .collect::<Result<Vec<_>>>()?;
    let parsed_chain = chain
        .iter()
        .map(|c| x509::parse(c.as_ref(), "cert-chain.pem"))
        .collect::<Result<Vec<_>>>()?;
    let mut current = x509::parse(first.as_ref(), "CA signing certificate")?;
    // Each step moves one link up; more steps than links means a loop.
    for _ in 0..=chain.len() {
        let signed_by = |c: &x509_parser::prelude::X509Certificate<'_>| {
            c.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(c.public_key())).is_ok()
        };
        if parsed_roots.iter().any(signed_by) {
            return Ok(());
        }
        match parsed_chain
            .iter()
            .find(|c| c.subject().as_raw() != current.subject().as_raw() && signed_by(c))
        {
            Some(next) => current = next.clone(),
            None => break,
        }
    }
    Err(Error::cert(
        "CA certificate chain",
        format!(
            "\"{}\" does not chain to any certificate in root-cert.pem; put the \
             intermediates in cert-chain.pem and the root in root-cert.pem",
            current.subject()
        ),
    ))
}
