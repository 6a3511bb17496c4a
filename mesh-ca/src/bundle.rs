//! The trust bundle: the set of root certificates a workload trusts.
//!
//! During a root rotation the bundle holds the old and the new root at the
//! same time, so certificates chained to either verify. Verification here is
//! chain building and validity only (webpki, ring algorithms); checking the
//! SPIFFE identity on top is the job of `tls::verifier`.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::error::{Error, Result};
use crate::x509;

/// Which extended key usage a verified leaf must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The peer acts as a TLS server.
    ServerAuth,
    /// The peer acts as a TLS client.
    ClientAuth,
}

/// A set of trusted root certificates, ready for verification.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Arc<Vec<TrustAnchor<'static>>>,
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
    }
}

impl TrustBundle {
    /// Builds a bundle from DER roots. Duplicates are dropped; an empty set
    /// or a certificate that cannot be a trust anchor is an error.
    pub fn new(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<Self> {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for root in roots {
            if !unique.contains(&root) {
                unique.push(root);
            }
        }
        if unique.is_empty() {
            return Err(Error::cert("trust bundle", "holds no root certificate"));
        }
        let anchors = unique
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| {
                        Error::cert(
                            "trust bundle",
                            format!("root is not usable as a trust anchor: {e}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TrustBundle {
            roots: unique,
            anchors: Arc::new(anchors),
        })
    }

    /// Parses a PEM bundle (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &str, what: &str) -> Result<Self> {
        TrustBundle::new(x509::certs_from_pem(pem, what)?)
    }

    /// The bundle as concatenated PEM blocks (the `root-cert.pem` format).
    pub fn to_pem(&self) -> String {
        x509::certs_to_pem(&self.roots)
    }

    /// The roots, in the order given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// A new bundle holding the roots of both (used while rotating roots).
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        let mut roots = self.roots.clone();
        let mut anchors = (*self.anchors).clone();
        for (root, anchor) in other.roots.iter().zip(other.anchors.iter()) {
            if !roots.contains(root) {
                roots.push(root.clone());
                anchors.push(anchor.clone());
            }
        }
        TrustBundle {
            roots,
            anchors: Arc::new(anchors),
        }
    }

    /// Whether `root` is one of the bundle's roots.
    pub fn contains(&self, root: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.as_ref() == root.as_ref())
    }

    /// Verifies that `leaf` chains to one of the roots through
    /// `intermediates`, is valid at `now`, and allows `usage`.
    pub fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> std::result::Result<(), webpki::Error> {
        let cert = EndEntityCert::try_from(leaf)?;
        let usage = match usage {
            Usage::ServerAuth => KeyUsage::server_auth(),
            Usage::ClientAuth => KeyUsage::client_auth(),
        };
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map(|_| ())
    }
}
