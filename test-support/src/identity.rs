//! Workload identities from a real mesh CA, for servers and clients under
//! test: a CA kept in a directory, and certificates it issues.

use std::time::{Duration, SystemTime};

use mesh_ca::{csr, CaConfig, CertificateAuthority, SpiffeId, WorkloadCertificate};

/// The trust domain of the tests' mesh.
pub const TD: &str = "cluster.local";

/// A CA of trust domain `td` persisted in `dir` (loaded when already
/// there).
pub fn ca_in(dir: &std::path::Path, td: &str) -> CertificateAuthority {
    mesh_ca::ca_store::load_or_create(dir, CaConfig::new(td))
        .unwrap()
        .0
}

/// A certificate for the SPIFFE id `identity`, signed as of `at`, valid
/// for `ttl` (the CA's default when `None`).
pub fn issue_at(
    ca: &CertificateAuthority,
    identity: &str,
    at: SystemTime,
    ttl: Option<Duration>,
) -> WorkloadCertificate {
    let identity = SpiffeId::parse(identity).unwrap();
    let req = csr::generate(&identity).unwrap();
    let issued = ca.sign_csr_at(&req.csr_pem, &identity, ttl, at).unwrap();
    WorkloadCertificate::from_ca_response(&issued.chain_pem, None, req.key).unwrap()
}

/// A certificate for service account `sa` in `default`, valid from now.
pub fn issue(ca: &CertificateAuthority, sa: &str) -> WorkloadCertificate {
    let td = ca.trust_domain().to_string();
    issue_at(
        ca,
        &format!("spiffe://{td}/ns/default/sa/{sa}"),
        SystemTime::now(),
        None,
    )
}
