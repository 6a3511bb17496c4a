//! Certificates for servers the CA's own process runs (meshd's TLS port),
//! issued by the CA directly and kept fresh by the same
//! [`CertificateProvider`] rotation workloads use.
//!
//! Not here: workload certificates (those come through a CSR and an
//! authenticated caller, see `server`).

use std::sync::Arc;
use std::time::Duration;

use crate::ca::CertificateAuthority;
use crate::error::Result;
use crate::rotation::{CertificateFetcher, CertificateProvider, RotationConfig};
use crate::spiffe::SpiffeId;
use crate::workload::WorkloadCertificate;

/// A [`CertificateFetcher`] that signs with the CA in process, with a
/// fresh key each time and the given DNS names or addresses as SANs.
#[derive(Debug, Clone)]
pub struct LocalIssuer {
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    ttl: Option<Duration>,
}

impl LocalIssuer {
    /// Issues from `ca` with `names` (DNS names, or IP addresses) next to
    /// the SPIFFE identity; `ttl` `None` is the CA's workload default.
    pub fn new(ca: Arc<CertificateAuthority>, names: Vec<String>, ttl: Option<Duration>) -> Self {
        LocalIssuer { ca, names, ttl }
    }

    /// Starts a provider for `identity` that rotates at half-life.
    pub async fn start(self, identity: SpiffeId) -> Result<CertificateProvider> {
        CertificateProvider::start(self, RotationConfig::new(identity)).await
    }
}

impl CertificateFetcher for LocalIssuer {
    async fn fetch(
        &self,
        identity: &SpiffeId,
        _current: Option<Arc<WorkloadCertificate>>,
    ) -> Result<WorkloadCertificate> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        self.ca.issue_local(identity, &names, self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaConfig;

    /// A short-lived serving certificate is replaced before it expires,
    /// with the same names; the clock is tokio's, paused.
    #[tokio::test(start_paused = true)]
    async fn serving_certificate_rotates_with_its_names() {
        let mut config = CaConfig::new("cluster.local");
        config.backdate = Duration::ZERO;
        let ca = Arc::new(CertificateAuthority::new_self_signed(config).unwrap().0);
        let id = SpiffeId::parse("spiffe://cluster.local/ns/istio-system/sa/meshd").unwrap();
        let issuer = LocalIssuer::new(
            ca,
            vec!["localhost".into(), "127.0.0.1".into()],
            Some(Duration::from_secs(3600)),
        );
        let provider = issuer.start(id.clone()).await.unwrap();
        let first = provider.current();
        assert_eq!(first.identity(), &id);
        let leaf = webpki::EndEntityCert::try_from(first.leaf()).unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let server = rustls_pki_types::ServerName::try_from(name).unwrap();
            leaf.verify_is_valid_for_subject_name(&server).unwrap();
        }
        let mut certs = provider.certificates();
        // Half of the hour: the paused clock jumps there.
        tokio::time::timeout(Duration::from_secs(3600), certs.changed())
            .await
            .expect("rotated before expiry")
            .unwrap();
        let second = provider.current();
        assert_ne!(second.leaf(), first.leaf());
        assert_eq!(second.identity(), &id);
    }
}
