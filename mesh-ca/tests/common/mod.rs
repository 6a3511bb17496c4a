//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared test helpers

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_ca::{csr, CaConfig, CertificateAuthority, SpiffeId, TrustBundle, WorkloadCertificate};
use tokio::sync::watch;

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub fn ca(td: &str) -> CertificateAuthority {
    CertificateAuthority::new_self_signed(CaConfig::new(td))
        .unwrap()
        .0
}

/// A workload certificate for `identity`, issued at `at` for `ttl`.
pub fn issue_at(
    ca: &CertificateAuthority,
    identity: &str,
    at: SystemTime,
    ttl: Option<Duration>,
) -> WorkloadCertificate {
    let identity = id(identity);
    let req = csr::generate(&identity).unwrap();
    let issued = ca.sign_csr_at(&req.csr_pem, &identity, ttl, at).unwrap();
    WorkloadCertificate::from_ca_response(&issued.chain_pem, None, req.key).unwrap()
}

pub fn issue(ca: &CertificateAuthority, identity: &str) -> WorkloadCertificate {
    issue_at(ca, identity, SystemTime::now(), None)
}

pub fn certs(
    cert: WorkloadCertificate,
) -> (
    watch::Sender<Arc<WorkloadCertificate>>,
    watch::Receiver<Arc<WorkloadCertificate>>,
) {
    watch::channel(Arc::new(cert))
}

pub fn trust(bundle: TrustBundle) -> watch::Receiver<Arc<TrustBundle>> {
    watch::channel(Arc::new(bundle)).1
}
