//! The one crypto provider of the workspace: rustls' `ring` provider.
//!
//! Every config and key in this crate is built from this provider explicitly,
//! so nothing depends on a process-wide default being installed.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The shared `ring` crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Fills `buf` with cryptographically secure random bytes.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), crate::Error> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| crate::Error::Config("the system random number generator failed".into()))
}
