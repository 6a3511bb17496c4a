//! Certificate rotation on a paused tokio clock: half-life rotation,
//! backoff while the CA is down, files on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ca, id};
use mesh_ca::{
    csr, files, CertificateAuthority, CertificateFetcher, CertificateProvider, Error,
    RotationConfig, SpiffeId, WorkloadCertificate,
};
use tokio::time::Instant;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Clone)]
struct FakeCa {
    ca: Arc<CertificateAuthority>,
    calls: Arc<Mutex<Vec<Instant>>>,
    down: Arc<AtomicBool>,
}

impl FakeCa {
    fn new() -> Self {
        FakeCa {
            ca: Arc::new(ca("cluster.local")),
            calls: Arc::default(),
            down: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

impl CertificateFetcher for FakeCa {
    async fn fetch(
        &self,
        identity: &SpiffeId,
        _current: Option<Arc<WorkloadCertificate>>,
    ) -> mesh_ca::Result<WorkloadCertificate> {
        self.calls.lock().unwrap().push(Instant::now());
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Connect {
                address: "fake".into(),
                detail: "connection refused".into(),
            });
        }
        let req = csr::generate(identity)?;
        let issued = self.ca.sign_csr(&req.csr_pem, identity, None)?;
        WorkloadCertificate::from_ca_response(&issued.chain_pem, None, req.key)
    }
}

#[tokio::test(start_paused = true)]
async fn rotates_at_half_life() {
    let fake = FakeCa::new();
    let t0 = Instant::now();
    let provider = CertificateProvider::start(fake.clone(), RotationConfig::new(id(WEB)))
        .await
        .unwrap();
    let first = provider.current();
    assert_eq!(first.identity(), &id(WEB));
    let mut updates = provider.certificates();
    updates.borrow_and_update();

    tokio::time::sleep(11 * HOUR + Duration::from_secs(50 * 60)).await;
    assert_eq!(fake.calls().len(), 1, "no rotation before half-life");
    assert!(Arc::ptr_eq(&provider.current(), &first));

    updates.changed().await.unwrap();
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let at = calls[1] - t0;
    // 24h lifetime (+1 min backdating): half-life is 12h minus 30s.
    assert!(
        at >= 12 * HOUR - Duration::from_secs(60) && at <= 12 * HOUR,
        "{at:?}"
    );
    assert!(!Arc::ptr_eq(&provider.current(), &first));
    assert_ne!(provider.current().leaf(), first.leaf());

    // And again half a lifetime later.
    updates.changed().await.unwrap();
    let at = fake.calls()[2] - calls[1];
    assert!(
        at >= 12 * HOUR - Duration::from_secs(60) && at <= 12 * HOUR,
        "{at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn custom_fraction() {
    let fake = FakeCa::new();
    let t0 = Instant::now();
    let mut cfg = RotationConfig::new(id(WEB));
    cfg.refresh_fraction = 0.8;
    let provider = CertificateProvider::start(fake.clone(), cfg).await.unwrap();
    let mut updates = provider.certificates();
    updates.borrow_and_update();
    updates.changed().await.unwrap();
    let at = fake.calls()[1] - t0;
    let expected = Duration::from_secs_f64((24.0 * 3600.0 + 60.0) * 0.8 - 60.0);
    assert!(
        at.abs_diff(expected) < Duration::from_secs(2),
        "{at:?} vs {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn ca_down_backs_off_with_jitter_and_keeps_the_old_certificate() {
    let fake = FakeCa::new();
    let mut cfg = RotationConfig::new(id(WEB));
    cfg.initial_backoff = Duration::from_secs(1);
    cfg.max_backoff = Duration::from_secs(8);
    let provider = CertificateProvider::start(fake.clone(), cfg).await.unwrap();
    let first = provider.current();
    let mut updates = provider.certificates();
    updates.borrow_and_update();

    fake.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(12 * HOUR).await;
    while fake.calls().len() < 8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Attempt n waits in [b/2, b] with b = 1s, 2s, 4s, 8s, 8s, ...
    let calls = fake.calls();
    for (i, pair) in calls[1..].windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let b = Duration::from_secs((1u64 << i).min(8));
        assert!(
            gap >= b / 2 && gap <= b + Duration::from_millis(1),
            "retry {i}: {gap:?} not in [{:?}, {b:?}]",
            b / 2
        );
    }
    assert!(
        Arc::ptr_eq(&provider.current(), &first),
        "old certificate kept"
    );
    assert!(!updates.has_changed().unwrap());

    fake.down.store(false, Ordering::SeqCst);
    updates.changed().await.unwrap();
    assert_ne!(provider.current().leaf(), first.leaf());
}

#[tokio::test(start_paused = true)]
async fn first_fetch_retries_until_the_ca_is_up() {
    let fake = FakeCa::new();
    fake.down.store(true, Ordering::SeqCst);
    let flip = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        flip.down.store(false, Ordering::SeqCst);
    });
    let t0 = Instant::now();
    let provider = CertificateProvider::start(fake.clone(), RotationConfig::new(id(WEB)))
        .await
        .unwrap();
    assert!(Instant::now() - t0 >= Duration::from_secs(30));
    assert!(fake.calls().len() > 2);
    assert_eq!(provider.current().identity(), &id(WEB));
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(start_paused = true)]
async fn writes_files_and_reuses_them_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let fake = FakeCa::new();
    let mut cfg = RotationConfig::new(id(WEB));
    cfg.output_dir = Some(out.clone());
    let provider = CertificateProvider::start(fake.clone(), cfg.clone())
        .await
        .unwrap();
    assert_eq!(mode(&out.join(files::KEY_FILE)), 0o600);
    assert_eq!(mode(&out.join(files::CERT_CHAIN_FILE)), 0o644);
    assert_eq!(mode(&out.join(files::ROOT_CERT_FILE)), 0o644);
    let on_disk = files::read_workload_files(&out).unwrap();
    assert_eq!(on_disk.leaf(), provider.current().leaf());
    assert_eq!(on_disk.trust_bundle(), fake.ca.trust_bundle());
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);

    // Rotation rewrites them.
    let mut updates = provider.certificates();
    updates.borrow_and_update();
    updates.changed().await.unwrap();
    let on_disk = files::read_workload_files(&out).unwrap();
    assert_eq!(on_disk.leaf(), provider.current().leaf());
    assert_eq!(mode(&out.join(files::KEY_FILE)), 0o600);
    let current = provider.current();
    drop(provider);

    // A restart while the CA is down starts from the still-valid files.
    fake.down.store(true, Ordering::SeqCst);
    let calls_before = fake.calls().len();
    let restarted = CertificateProvider::start(fake.clone(), cfg).await.unwrap();
    assert_eq!(restarted.current().leaf(), current.leaf());
    assert_eq!(fake.calls().len(), calls_before);
}

#[tokio::test]
async fn rejects_bad_config() {
    let mut cfg = RotationConfig::new(id(WEB));
    cfg.refresh_fraction = 1.5;
    assert!(CertificateProvider::start(FakeCa::new(), cfg)
        .await
        .is_err());
}
