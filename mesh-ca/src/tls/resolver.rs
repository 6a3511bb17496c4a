//! Certificate resolver for both TLS roles, backed by a `watch` channel of
//! the current [`WorkloadCertificate`]. Each handshake takes the newest
//! certificate (an `Arc` clone of a prebuilt `CertifiedKey`); connections
//! already established keep the one they negotiated.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio::sync::watch;

use crate::workload::WorkloadCertificate;

/// Presents the current workload certificate in every new handshake.
#[derive(Debug, Clone)]
pub struct CertResolver {
    certs: watch::Receiver<Arc<WorkloadCertificate>>,
}

impl CertResolver {
    /// Follows `certs`; the latest value is used for each handshake.
    pub fn new(certs: watch::Receiver<Arc<WorkloadCertificate>>) -> Self {
        CertResolver { certs }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.certs.borrow().certified_key()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
