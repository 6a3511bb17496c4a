//! CA core: root creation and reload, plugged-in intermediates, and the
//! shape of issued certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use mesh_ca::bundle::Usage;
use mesh_ca::ca_store::{self, CaSource};
use mesh_ca::{csr, x509, CaConfig, CertificateAuthority, SpiffeId, TrustBundle};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::UnixTime;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn root_is_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let (ca1, src1) = ca_store::load_or_create(&ca_dir, CaConfig::new("cluster.local")).unwrap();
    assert_eq!(src1, CaSource::Created);
    assert_eq!(mode(&ca_dir.join("root-key.pem")), 0o600);
    assert_eq!(mode(&ca_dir.join("root-cert.pem")), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);
    let info = x509::cert_info(ca1.signing_cert()).unwrap();
    assert!(info.is_ca && info.self_issued);
    let life = info.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        life > Duration::from_secs(9 * 365 * 86400),
        "root lives ~10 years"
    );

    let (ca2, src2) = ca_store::load_or_create(&ca_dir, CaConfig::new("cluster.local")).unwrap();
    assert_eq!(src2, CaSource::Loaded);
    assert_eq!(ca1.signing_cert(), ca2.signing_cert());
    assert_eq!(ca1.trust_bundle(), ca2.trust_bundle());

    // A certificate issued before the restart verifies against the reloaded root.
    let me = id("spiffe://cluster.local/ns/default/sa/web");
    let req = csr::generate(&me).unwrap();
    let issued = ca1.sign_csr(&req.csr_pem, &me, None).unwrap();
    ca2.trust_bundle()
        .verify(&issued.leaf, &[], UnixTime::now(), Usage::ClientAuth)
        .unwrap();
}

#[test]
fn stray_root_without_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = ca_store::load_or_create(dir.path(), CaConfig::new("td")).unwrap();
    drop(ca);
    std::fs::remove_file(dir.path().join("root-key.pem")).unwrap();
    let err = ca_store::load_or_create(dir.path(), CaConfig::new("td")).unwrap_err();
    assert!(err.to_string().contains("root-key.pem"), "{err}");
}

#[test]
fn issued_certificate_has_only_the_spiffe_san_ttl_and_chain_order() {
    let (ca, _) = CertificateAuthority::new_self_signed(CaConfig::new("cluster.local")).unwrap();
    let me = id("spiffe://cluster.local/ns/shop/sa/cart");
    // The CSR asks for a different identity and a DNS name; both are ignored.
    let other = id("spiffe://cluster.local/ns/kube-system/sa/admin");
    let req = csr::generate(&other).unwrap();
    let now = SystemTime::now();
    let issued = ca.sign_csr_at(&req.csr_pem, &me, None, now).unwrap();
    let info = x509::cert_info(&issued.leaf).unwrap();
    assert_eq!(info.uri_sans, vec![me.to_string()]);
    assert!(info.dns_sans.is_empty());
    assert!(!info.is_ca);
    let ttl = info.not_after.duration_since(now).unwrap();
    assert!(
        ttl <= Duration::from_secs(86400) && ttl >= Duration::from_secs(86400 - 2),
        "{ttl:?}"
    );
    // Chain: leaf, then the root bundle (no intermediates here).
    assert_eq!(issued.chain_pem.len(), 2);
    assert_eq!(
        x509::certs_from_pem(&issued.chain_pem[0], "t").unwrap()[0],
        issued.leaf
    );
    assert_eq!(
        x509::certs_from_pem(&issued.chain_pem[1], "t").unwrap(),
        ca.trust_bundle().roots()
    );
    // Usable for both TLS roles.
    for usage in [Usage::ClientAuth, Usage::ServerAuth] {
        ca.trust_bundle()
            .verify(&issued.leaf, &[], UnixTime::now(), usage)
            .unwrap();
    }
    assert_eq!(x509::spiffe_id(&issued.leaf).unwrap(), me);

    // Requested TTLs are honored but capped at the maximum.
    let short = ca
        .sign_csr_at(&req.csr_pem, &me, Some(Duration::from_secs(3600)), now)
        .unwrap();
    assert!(short.not_after.duration_since(now).unwrap() <= Duration::from_secs(3600));
    let long = ca
        .sign_csr_at(
            &req.csr_pem,
            &me,
            Some(Duration::from_secs(10 * 365 * 86400)),
            now,
        )
        .unwrap();
    let granted = long.not_after.duration_since(now).unwrap();
    assert!(granted <= Duration::from_secs(90 * 86400), "{granted:?}");
}

#[test]
fn refuses_foreign_trust_domain_and_bad_csr() {
    let (ca, _) = CertificateAuthority::new_self_signed(CaConfig::new("cluster.local")).unwrap();
    let foreign = id("spiffe://evil.example/ns/a/sa/b");
    let req = csr::generate(&foreign).unwrap();
    let err = ca.sign_csr(&req.csr_pem, &foreign, None).unwrap_err();
    assert!(matches!(err, mesh_ca::Error::Policy(_)), "{err}");
    let me = id("spiffe://cluster.local/ns/a/sa/b");
    assert!(matches!(
        ca.sign_csr("garbage", &me, None).unwrap_err(),
        mesh_ca::Error::Csr(_)
    ));
    // Tamper with the CSR body: the self-signature no longer verifies.
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(req.csr_pem.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'static>| d.as_ref().to_vec())
        .unwrap();
    let mut der = der;
    let n = der.len();
    der[n - 10] ^= 0xff;
    let bad = x509::pem_block("CERTIFICATE REQUEST", &der);
    assert!(matches!(
        ca.sign_csr(&bad, &me, None).unwrap_err(),
        mesh_ca::Error::Csr(_)
    ));
}

/// An external root and intermediate, as cert-manager or Vault would hand out.
fn external_pki(dir: &std::path::Path) -> (rustls_pki_types::CertificateDer<'static>, String) {
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Corp Root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let int_key = KeyPair::generate().unwrap();
    let mut int_params = CertificateParams::default();
    int_params
        .distinguished_name
        .push(DnType::CommonName, "Mesh Intermediate");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    int_params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let int = int_params.signed_by(&int_key, &root_issuer).unwrap();

    std::fs::write(dir.join("ca-cert.pem"), int.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", int.pem(), root.pem()),
    )
    .unwrap();
    (root.der().clone(), int.pem())
}

#[test]
fn plugged_in_intermediate_signs_chains_to_external_root() {
    let dir = tempfile::tempdir().unwrap();
    let (root, int_pem) = external_pki(dir.path());
    let (ca, src) = ca_store::load_or_create(dir.path(), CaConfig::new("cluster.local")).unwrap();
    assert_eq!(src, CaSource::PluggedIn);
    assert_eq!(ca.trust_bundle().roots(), std::slice::from_ref(&root));
    let me = id("spiffe://cluster.local/ns/default/sa/api");
    let req = csr::generate(&me).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, &me, None).unwrap();
    // leaf, intermediate, root bundle
    assert_eq!(issued.chain_pem.len(), 3);
    assert_eq!(issued.chain_pem[1], int_pem);
    let ints = x509::certs_from_pem(&issued.chain_pem[1], "t").unwrap();
    let bundle = TrustBundle::new([root]).unwrap();
    bundle
        .verify(&issued.leaf, &ints, UnixTime::now(), Usage::ServerAuth)
        .unwrap();
    // Without the intermediate the leaf does not verify.
    assert!(bundle
        .verify(&issued.leaf, &[], UnixTime::now(), Usage::ServerAuth)
        .is_err());
}

#[test]
fn plugged_in_with_wrong_root_or_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    external_pki(dir.path());
    // Replace the root with an unrelated one.
    let other = tempfile::tempdir().unwrap();
    external_pki(other.path());
    std::fs::copy(
        other.path().join("root-cert.pem"),
        dir.path().join("root-cert.pem"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("cert-chain.pem")).unwrap();
    let err = ca_store::load_or_create(dir.path(), CaConfig::new("td")).unwrap_err();
    assert!(err.to_string().contains("root-cert.pem"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    external_pki(dir.path());
    std::fs::copy(
        other.path().join("ca-key.pem"),
        dir.path().join("ca-key.pem"),
    )
    .unwrap();
    let err = ca_store::load_or_create(dir.path(), CaConfig::new("td")).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn additional_roots_join_the_bundle() {
    let (old, _) = CertificateAuthority::new_self_signed(CaConfig::new("td")).unwrap();
    let mut cfg = CaConfig::new("td");
    cfg.additional_roots = old.trust_bundle().roots().to_vec();
    let (new, _) = CertificateAuthority::new_self_signed(cfg).unwrap();
    assert_eq!(new.trust_bundle().roots().len(), 2);
    // A leaf from the old root still verifies against the new bundle.
    let me = id("spiffe://td/ns/a/sa/b");
    let issued = old
        .sign_csr(&csr::generate(&me).unwrap().csr_pem, &me, None)
        .unwrap();
    new.trust_bundle()
        .verify(&issued.leaf, &[], UnixTime::now(), Usage::ClientAuth)
        .unwrap();
}

#[test]
fn plugged_in_root_signs_directly() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Vault Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let root = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), root.pem()).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), root.pem()).unwrap();
    let (ca, src) = ca_store::load_or_create(dir.path(), CaConfig::new("td")).unwrap();
    assert_eq!(src, CaSource::PluggedIn);
    assert!(ca.intermediates().is_empty());
    let me = id("spiffe://td/ns/a/sa/b");
    let issued = ca
        .sign_csr(&csr::generate(&me).unwrap().csr_pem, &me, None)
        .unwrap();
    assert_eq!(issued.chain_pem.len(), 2);
    ca.trust_bundle()
        .verify(&issued.leaf, &[], UnixTime::now(), Usage::ServerAuth)
        .unwrap();
}

#[test]
fn pkcs1_or_sec1_key_gets_an_actionable_error() {
    let dir = tempfile::tempdir().unwrap();
    external_pki(dir.path());
    std::fs::write(
        dir.path().join("ca-key.pem"),
        x509::pem_block("EC PRIVATE KEY", &[0x30, 0x00]),
    )
    .unwrap();
    let err = ca_store::load_or_create(dir.path(), CaConfig::new("td")).unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8"), "{err}");
}
