//! Workload side key and CSR generation: a fresh ECDSA P-256 key per
//! certificate and a PKCS#10 request naming the identity the workload
//! expects. The CA ignores everything but the key, but a well-formed request
//! keeps other CAs (and humans reading logs) happy.

use rcgen::{CertificateParams, DistinguishedName, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Result;
use crate::spiffe::SpiffeId;

/// A new private key and the CSR for it.
pub struct KeyAndCsr {
    /// The private key, PKCS#8 DER.
    pub key: PrivateKeyDer<'static>,
    /// The PEM `CERTIFICATE REQUEST`.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// Generates an ECDSA P-256 key and a CSR whose only SAN is `identity`.
pub fn generate(identity: &SpiffeId) -> Result<KeyAndCsr> {
    let key = crate::ca::generate_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(rcgen::string::Ia5String::try_from(
        identity.to_string(),
    )?)];
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        csr_pem: csr.pem()?,
    })
}
