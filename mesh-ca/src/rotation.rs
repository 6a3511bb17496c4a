//! Keeps a workload's certificate fresh.
//!
//! [`CertificateProvider::start`] obtains a first certificate (from still
//! valid files in the output directory, or from the CA), then a background
//! task fetches a new one when `refresh_fraction` of the current one's
//! lifetime has passed (half-life by default). While the CA is unreachable
//! it retries with jittered exponential backoff and the old certificate
//! stays published, even past its expiry, until a new one arrives. Every
//! new certificate is published on a `watch` channel (what the TLS
//! resolvers follow) and, if configured, written to the output directory.
//!
//! Timing uses tokio's clock for waiting and the wall clock only to read
//! how far through its lifetime a certificate is, so tests drive it with a
//! paused tokio clock.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bundle::TrustBundle;
use crate::error::Result;
use crate::files;
use crate::spiffe::SpiffeId;
use crate::workload::WorkloadCertificate;

/// Something that can obtain a certificate for an identity: the gRPC
/// [`crate::client::CaClient`], or any other source (tests use the CA
/// directly).
pub trait CertificateFetcher: Send + Sync + 'static {
    /// Fetches a new certificate for `identity`. `current` is the
    /// certificate in use, if any, for renewal-based authentication.
    fn fetch(
        &self,
        identity: &SpiffeId,
        current: Option<Arc<WorkloadCertificate>>,
    ) -> impl Future<Output = Result<WorkloadCertificate>> + Send;
}

/// Rotation settings.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// The identity to obtain.
    pub identity: SpiffeId,
    /// Fraction of the lifetime after which to rotate (0.5).
    pub refresh_fraction: f64,
    /// First retry delay after a failed fetch (1s).
    pub initial_backoff: Duration,
    /// Longest retry delay (60s).
    pub max_backoff: Duration,
    /// Where to keep `cert-chain.pem`, `key.pem` and `root-cert.pem`.
    pub output_dir: Option<PathBuf>,
}

impl RotationConfig {
    /// Defaults: rotate at half-life, back off from 1s to 60s, no files.
    pub fn new(identity: SpiffeId) -> Self {
        RotationConfig {
            identity,
            refresh_fraction: 0.5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            output_dir: None,
        }
    }
}

/// The current certificate and trust bundle of a workload, kept fresh by a
/// background task (stopped when the provider is dropped).
#[derive(Debug)]
pub struct CertificateProvider {
    certs: watch::Receiver<Arc<WorkloadCertificate>>,
    trust: watch::Receiver<Arc<TrustBundle>>,
    task: JoinHandle<()>,
}

impl Drop for CertificateProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A delay in `[d/2, d]`, so many workloads retrying together spread out.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = match crate::crypto::random_bytes(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    d.mul_f64(0.5 + 0.5 * r)
}

async fn fetch_with_retry<F: CertificateFetcher>(
    fetcher: &F,
    config: &RotationConfig,
    current: Option<Arc<WorkloadCertificate>>,
) -> WorkloadCertificate {
    let mut backoff = config.initial_backoff;
    let mut attempt = 1u32;
    loop {
        match fetcher.fetch(&config.identity, current.clone()).await {
            Ok(cert) => return cert,
            Err(e) => {
                let expired = current
                    .as_ref()
                    .is_some_and(|c| !c.is_valid_at(SystemTime::now()));
                let delay = jittered(backoff);
                tracing::warn!(
                    identity = %config.identity,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    current_expired = expired,
                    error = %e,
                    "certificate fetch failed; keeping the current certificate"
                );
                tokio::time::sleep(delay).await;
                backoff = (backoff * 2).min(config.max_backoff);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn write_files(config: &RotationConfig, cert: &WorkloadCertificate) {
    if let Some(dir) = &config.output_dir {
        if let Err(e) = files::write_workload_files(dir, cert) {
            tracing::error!(error = %e, "could not write workload certificate files");
        }
    }
}

fn from_files(config: &RotationConfig) -> Option<WorkloadCertificate> {
    let dir = config.output_dir.as_ref()?;
    let cert = files::read_workload_files(dir).ok()?;
    (cert.identity() == &config.identity && cert.is_valid_at(SystemTime::now())).then_some(cert)
}

impl CertificateProvider {
    /// Obtains the first certificate (retrying until it succeeds; wrap in a
    /// timeout to bound startup) and starts rotating.
    pub async fn start<F: CertificateFetcher>(fetcher: F, config: RotationConfig) -> Result<Self> {
        if !(config.refresh_fraction > 0.0 && config.refresh_fraction < 1.0) {
            return Err(crate::Error::Config(format!(
                "refresh_fraction must be between 0 and 1 (exclusive), got {}",
                config.refresh_fraction
            )));
        }
        if config.initial_backoff.is_zero() || config.max_backoff < config.initial_backoff {
            return Err(crate::Error::Config(
                "backoff must be positive and max_backoff >= initial_backoff".into(),
            ));
        }
        let first = match from_files(&config) {
            Some(cert) => {
                tracing::info!(identity = %config.identity, "reusing the certificate on disk");
                cert
            }
            None => {
                let cert = fetch_with_retry(&fetcher, &config, None).await;
                write_files(&config, &cert);
                cert
            }
        };
        let (trust_tx, trust) = watch::channel(Arc::new(first.trust_bundle().clone()));
        let (certs_tx, certs) = watch::channel(Arc::new(first));
        let task = tokio::spawn(rotate(fetcher, config, certs_tx, trust_tx));
        Ok(CertificateProvider { certs, trust, task })
    }

    /// The certificate in use now.
    pub fn current(&self) -> Arc<WorkloadCertificate> {
        self.certs.borrow().clone()
    }

    /// Follows certificate rotations (feed this to the TLS builders).
    pub fn certificates(&self) -> watch::Receiver<Arc<WorkloadCertificate>> {
        self.certs.clone()
    }

    /// Follows trust-bundle changes (feed this to the TLS builders).
    pub fn trust_bundle(&self) -> watch::Receiver<Arc<TrustBundle>> {
        self.trust.clone()
    }
}

async fn rotate<F: CertificateFetcher>(
    fetcher: F,
    config: RotationConfig,
    certs: watch::Sender<Arc<WorkloadCertificate>>,
    trust: watch::Sender<Arc<TrustBundle>>,
) {
    loop {
        let current = certs.borrow().clone();
        let due = current.refresh_time(config.refresh_fraction);
        // Never spin: even an already-due certificate waits a little, so a
        // CA handing out very short lifetimes is not hammered.
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(config.initial_backoff);
        tracing::debug!(identity = %config.identity, wait_secs = wait.as_secs(), "next certificate rotation");
        tokio::time::sleep(wait).await;
        let next = fetch_with_retry(&fetcher, &config, Some(current)).await;
        write_files(&config, &next);
        let bundle = next.trust_bundle().clone();
        trust.send_if_modified(|b| {
            if **b == bundle {
                false
            } else {
                *b = Arc::new(bundle);
                true
            }
        });
        tracing::info!(identity = %config.identity, "rotated workload certificate");
        certs.send_replace(Arc::new(next));
    }
}
