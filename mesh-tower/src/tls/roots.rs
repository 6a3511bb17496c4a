//! Root certificates for TLS to servers outside the mesh: a CA bundle file
//! (a DestinationRule's `caCertificates`, a JWKS issuer's CA) or the
//! operating system's bundle, found where the common distributions keep it
//! (the same places OpenSSL and Go look), `$SSL_CERT_FILE` first.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Where distributions keep the system CA bundle.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Reads every certificate of a PEM file; errors name what is wrong.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// A root store from a PEM CA bundle file.
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(read_certs(path)?);
    if added == 0 {
        return Err(format!(
            "none of its {ignored} certificates is usable as a trust anchor"
        ));
    }
    Ok(store)
}

/// The system CA bundle, or the list of places looked at.
pub fn system_roots() -> Result<RootCertStore, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        candidates.push(PathBuf::from(p));
    }
    candidates.extend(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in &candidates {
        if path.is_file() {
            if let Ok(store) = roots_from_file(path) {
                return Ok(store);
            }
        }
    }
    Err(SYSTEM_BUNDLES.join(", "))
}
