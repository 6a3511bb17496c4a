//! The workload identity in mesh mode: a certificate from the mesh CA
//! (Istio's `IstioCertificateService`), kept rotating by a
//! [`mesh_ca::CertificateProvider`]. Needs the `ca` feature.

use std::path::PathBuf;
use std::time::Duration;

use mesh_ca::{
    CaClient, CaClientConfig, CertificateProvider, RotationConfig, SpiffeId, TrustBundle,
};
use mesh_core::model::Client;

use super::SourceError;

/// The mesh CA (Istio's `IstioCertificateService`) and how to authenticate
/// to it.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// `host:port` of the CA.
    pub address: String,
    /// The DNS name on the CA's serving certificate.
    pub server_name: String,
    /// PEM file of the roots that verify the CA (`root-cert.pem`).
    pub roots_file: PathBuf,
    /// File holding the bootstrap token, if the CA wants one.
    pub token_file: Option<PathBuf>,
    /// Where to also write `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    pub output_dir: Option<PathBuf>,
    /// How long `build()` waits for the first certificate (30 s).
    pub timeout: Duration,
}

impl CaOptions {
    /// A CA at `address` whose certificate names `server_name`, verified
    /// with the roots in `roots_file`.
    pub fn new(
        address: impl Into<String>,
        server_name: impl Into<String>,
        roots_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            address: address.into(),
            server_name: server_name.into(),
            roots_file: roots_file.into(),
            token_file: None,
            output_dir: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Gets the workload certificate for `client` from the CA and keeps it
/// rotating.
pub async fn start_identity(
    ca: &CaOptions,
    client: &Client,
    trust_domain: &str,
) -> Result<CertificateProvider, SourceError> {
    let fail = |why: String| SourceError::Identity {
        ca: ca.address.clone(),
        why,
    };
    let sa = client.service_account.clone().ok_or_else(|| {
        fail("no service account: call .service_account(..) on the builder".into())
    })?;
    let id = SpiffeId::new(trust_domain, client.namespace.clone(), sa)
        .map_err(|e| fail(e.to_string()))?;
    let pem = std::fs::read_to_string(&ca.roots_file)
        .map_err(|e| fail(format!("reading CA roots {}: {e}", ca.roots_file.display())))?;
    let roots = TrustBundle::from_pem(&pem, &ca.roots_file.display().to_string())
        .map_err(|e| fail(e.to_string()))?;
    let mut cfg = CaClientConfig::new(ca.address.clone(), ca.server_name.clone(), roots);
    if let Some(f) = &ca.token_file {
        let token = std::fs::read_to_string(f)
            .map_err(|e| fail(format!("reading token {}: {e}", f.display())))?;
        cfg.token = Some(token.trim().to_string());
    }
    let mut rotation = RotationConfig::new(id);
    rotation.output_dir = ca.output_dir.clone();
    match tokio::time::timeout(
        ca.timeout,
        CertificateProvider::start(CaClient::new(cfg), rotation),
    )
    .await
    {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!(
            "no certificate within {:?}; check the CA address, its roots and the token",
            ca.timeout
        ))),
    }
}
