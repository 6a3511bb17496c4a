//! The on-disk layout of a workload certificate, shared with Istio and
//! gRPC's `file_watcher` certificate provider: `cert-chain.pem` (leaf then
//! intermediates), `key.pem` (the private key, mode 0600) and
//! `root-cert.pem` (the trust bundle). Non-Rust applications and stock gRPC
//! clients read these files directly.
//!
//! Each file is replaced atomically (temporary file + rename). The three
//! files are not replaced as one unit: a reader that catches the key and
//! chain from different rotations sees a mismatch and should retry, as
//! `file_watcher` does on its next refresh.

use std::path::Path;

use rustls_pki_types::PrivateKeyDer;

use crate::bundle::TrustBundle;
use crate::error::Result;
use crate::fsutil::{self, MODE_PRIVATE, MODE_PUBLIC};
use crate::workload::WorkloadCertificate;
use crate::x509;

/// Leaf and intermediates, PEM.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// Private key, PEM.
pub const KEY_FILE: &str = "key.pem";
/// Trust bundle, PEM.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

fn key_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    x509::pem_block(label, key.secret_der())
}

/// Writes the three files into `dir` (created 0700 if missing): roots
/// first, then the key, then the chain.
pub fn write_workload_files(dir: &Path, cert: &WorkloadCertificate) -> Result<()> {
    fsutil::create_private_dir(dir)?;
    fsutil::write_atomic(
        &dir.join(ROOT_CERT_FILE),
        cert.trust_bundle().to_pem().as_bytes(),
        MODE_PUBLIC,
    )?;
    fsutil::write_atomic(
        &dir.join(KEY_FILE),
        key_pem(cert.key()).as_bytes(),
        MODE_PRIVATE,
    )?;
    fsutil::write_atomic(
        &dir.join(CERT_CHAIN_FILE),
        x509::certs_to_pem(cert.chain()).as_bytes(),
        MODE_PUBLIC,
    )?;
    Ok(())
}

/// Reads a workload certificate back from the three files in `dir`.
pub fn read_workload_files(dir: &Path) -> Result<WorkloadCertificate> {
    let chain_path = dir.join(CERT_CHAIN_FILE);
    let key_path = dir.join(KEY_FILE);
    let root_path = dir.join(ROOT_CERT_FILE);
    let chain = x509::certs_from_pem(
        &fsutil::read_string(&chain_path)?,
        &chain_path.display().to_string(),
    )?;
    let key = x509::key_from_pem(
        &fsutil::read_string(&key_path)?,
        &key_path.display().to_string(),
    )?;
    let trust = TrustBundle::from_pem(
        &fsutil::read_string(&root_path)?,
        &root_path.display().to_string(),
    )?;
    WorkloadCertificate::new(chain, key, trust)
}
