//! Where the CA's own keys come from: a directory on disk.
//!
//! Two layouts, checked in this order:
//!
//! * **Plugged-in CA** (Istio's "plug in CA certificates" layout, how users
//!   bring a root or intermediate from cert-manager, Vault or an offline
//!   root): `ca-cert.pem` (the signing certificate), `ca-key.pem` (its key,
//!   PKCS#8), `root-cert.pem` (one or more trusted roots) and optionally
//!   `cert-chain.pem` (the certificates from `ca-cert.pem` up to the root;
//!   duplicates of the signing cert or the roots are ignored).
//! * **Self-signed root**: `root-cert.pem` and `root-key.pem`. When the
//!   directory holds neither layout, a new root is created and written there,
//!   both files mode 0600 in a 0700 directory, and reloaded on later starts.

use std::path::Path;

use rcgen::KeyPair;
use rustls_pki_types::PrivateKeyDer;

use crate::bundle::TrustBundle;
use crate::ca::{CaConfig, CertificateAuthority};
use crate::error::{Error, Result};
use crate::fsutil::{self, MODE_PRIVATE};
use crate::x509;

/// Plugged-in signing certificate.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// Plugged-in signing key.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Trusted roots (both layouts).
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Self-signed root key.
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// Plugged-in chain from the signing certificate up to the root.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Which layout a CA was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    /// A root created by this call and written to the directory.
    Created,
    /// A self-signed root created earlier and loaded from the directory.
    Loaded,
    /// A plugged-in root or intermediate.
    PluggedIn,
}

/// Loads the CA from `dir` (plugged-in or previously created root) or
/// creates and persists a new self-signed root there.
pub fn load_or_create(dir: &Path, config: CaConfig) -> Result<(CertificateAuthority, CaSource)> {
    if dir.join(CA_CERT_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
        return Ok((load_plugged_in(dir, config)?, CaSource::PluggedIn));
    }
    let root = dir.join(ROOT_CERT_FILE);
    let key = dir.join(ROOT_KEY_FILE);
    match (root.exists(), key.exists()) {
        (true, true) => Ok((load_self_signed(dir, config)?, CaSource::Loaded)),
        (false, false) => Ok((create_self_signed(dir, config)?, CaSource::Created)),
        (true, false) => Err(Error::Config(format!(
            "{} exists but neither {} (self-signed root) nor {}/{} (plugged-in CA) do; \
             restore the key or remove the stray root to create a new one",
            root.display(),
            ROOT_KEY_FILE,
            CA_CERT_FILE,
            CA_KEY_FILE
        ))),
        (false, true) => Err(Error::Config(format!(
            "{} exists without {}; restore the root certificate or remove the key",
            key.display(),
            ROOT_CERT_FILE
        ))),
    }
}

fn key_pair(pem: &str, what: &str) -> Result<KeyPair> {
    match x509::key_from_pem(pem, what)? {
        PrivateKeyDer::Pkcs8(der) => KeyPair::try_from(der.secret_pkcs8_der())
            .map_err(|e| Error::key(what, format!("unsupported key: {e}"))),
        _ => Err(Error::key(
            what,
            "must be PKCS#8 (\"BEGIN PRIVATE KEY\"); convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`",
        )),
    }
}

/// Loads a plugged-in CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
/// optional `cert-chain.pem`).
pub fn load_plugged_in(dir: &Path, config: CaConfig) -> Result<CertificateAuthority> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let root_path = dir.join(ROOT_CERT_FILE);
    let chain_path = dir.join(CERT_CHAIN_FILE);
    let cert_what = cert_path.display().to_string();
    let signing = x509::certs_from_pem(&fsutil::read_string(&cert_path)?, &cert_what)?;
    let key = key_pair(
        &fsutil::read_string(&key_path)?,
        &key_path.display().to_string(),
    )?;
    let roots = TrustBundle::from_pem(
        &fsutil::read_string(&root_path)?,
        &root_path.display().to_string(),
    )?;
    let mut chain: Vec<_> = signing.iter().skip(1).cloned().collect();
    if chain_path.exists() {
        chain.extend(x509::certs_from_pem(
            &fsutil::read_string(&chain_path)?,
            &chain_path.display().to_string(),
        )?);
    }
    let signing_cert = signing
        .into_iter()
        .next()
        .ok_or_else(|| Error::cert(cert_what, "no certificate"))?;
    CertificateAuthority::from_parts(config, signing_cert, key, chain, roots)
}

fn load_self_signed(dir: &Path, config: CaConfig) -> Result<CertificateAuthority> {
    let root_path = dir.join(ROOT_CERT_FILE);
    let key_path = dir.join(ROOT_KEY_FILE);
    let what = root_path.display().to_string();
    let roots = x509::certs_from_pem(&fsutil::read_string(&root_path)?, &what)?;
    let key = key_pair(
        &fsutil::read_string(&key_path)?,
        &key_path.display().to_string(),
    )?;
    let root = roots
        .first()
        .cloned()
        .ok_or_else(|| Error::cert(what, "no certificate"))?;
    let bundle = TrustBundle::new(roots)?;
    CertificateAuthority::from_parts(config, root, key, Vec::new(), bundle)
}

fn create_self_signed(dir: &Path, config: CaConfig) -> Result<CertificateAuthority> {
    fsutil::create_private_dir(dir)?;
    let (ca, key) = CertificateAuthority::new_self_signed(config)?;
    // Key first: a root without its key would block the next start.
    fsutil::write_atomic(
        &dir.join(ROOT_KEY_FILE),
        x509::pem_block("PRIVATE KEY", key.secret_pkcs8_der()).as_bytes(),
        MODE_PRIVATE,
    )?;
    fsutil::write_atomic(
        &dir.join(ROOT_CERT_FILE),
        x509::cert_to_pem(ca.signing_cert()).as_bytes(),
        MODE_PRIVATE,
    )?;
    tracing::info!(dir = %dir.display(), trust_domain = ca.trust_domain(), "created self-signed root CA");
    Ok(ca)
}
