//! The mesh root in a Secret, so every meshd replica signs with the same
//! CA, as istiod keeps its self-signed root in `istio-ca-secret`.
//!
//! At start, in meshd's namespace:
//! 1. `cacerts` (Istio's plug-in CA Secret: `ca-cert.pem`, `ca-key.pem`,
//!    `root-cert.pem`, `cert-chain.pem`) wins when present;
//! 2. else `istio-ca-secret` (`ca-cert.pem`, `ca-key.pem`: a self-signed
//!    root) is used when present;
//! 3. else this replica creates a root and tries to create
//!    `istio-ca-secret` with it. Creation is atomic on the API server: the
//!    replica that loses the race (409 Conflict) reads the winner's root
//!    and throws its own away. That is why no Lease is needed for this.
//!
//! The Secret's files are written into the CA directory, which
//! [`mesh_ca::ca_store`] then loads as usual.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;
use mesh_ca::ca_store::{
    self, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE, ROOT_KEY_FILE,
};
use mesh_ca::CaConfig;

use crate::error::{MeshdError, Result};

/// Istio's plug-in CA Secret.
pub const PLUGGED_IN_SECRET: &str = "cacerts";
/// Istio's self-signed root Secret.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";

/// Where the CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSecretSource {
    /// `cacerts`.
    PluggedIn,
    /// An `istio-ca-secret` another replica (or an earlier start) made.
    Existing,
    /// An `istio-ca-secret` this replica created.
    Created,
}

fn err(what: String) -> MeshdError {
    MeshdError::Kubernetes(what)
}

fn get(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
}

/// Writes a CA file readable by meshd's user only (it may be a key).
fn write(dir: &Path, file: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(file);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| MeshdError::Io {
            what: format!("writing the CA file {}", path.display()),
            source: e,
        })
}

/// Fills `dir` (empty, private) with the CA from the cluster's Secrets in
/// `namespace`, creating `istio-ca-secret` when neither exists.
pub async fn sync(
    client: Client,
    namespace: &str,
    dir: &Path,
    trust_domain: &str,
) -> Result<CaSecretSource> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let read = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get_opt(name).await.map_err(|e| {
                err(format!(
                    "reading Secret {namespace}/{name}: {e}; meshd needs get on secrets in its namespace"
                ))
            })
        }
    };
    if let Some(s) = read(PLUGGED_IN_SECRET).await? {
        for file in [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE] {
            match get(&s, file) {
                Some(b) => write(dir, file, &b)?,
                None if file == CERT_CHAIN_FILE => {}
                None => {
                    return Err(err(format!(
                        "Secret {namespace}/{PLUGGED_IN_SECRET} has no {file}; a plug-in CA needs ca-cert.pem, ca-key.pem and root-cert.pem"
                    )))
                }
            }
        }
        return Ok(CaSecretSource::PluggedIn);
    }
    if let Some(s) = read(SELF_SIGNED_SECRET).await? {
        write_self_signed(&s, namespace, dir)?;
        return Ok(CaSecretSource::Existing);
    }
    // Nobody made one yet: make a root in a scratch directory and offer it.
    let scratch = tempfile::tempdir().map_err(|e| MeshdError::Io {
        what: "creating a scratch directory for a new root".into(),
        source: e,
    })?;
    let fresh = scratch.path().join("ca");
    ca_store::load_or_create(&fresh, CaConfig::new(trust_domain.to_string())).map_err(
        |source| MeshdError::Ca {
            dir: fresh.clone(),
            source,
        },
    )?;
    let read_file = |f: &str| {
        std::fs::read(fresh.join(f)).map_err(|e| MeshdError::Io {
            what: format!("reading the new root's {f}"),
            source: e,
        })
    };
    let (cert, key) = (read_file(ROOT_CERT_FILE)?, read_file(ROOT_KEY_FILE)?);
    let data: BTreeMap<String, ByteString> = [
        (CA_CERT_FILE, cert.clone()),
        (CA_KEY_FILE, key),
        (ROOT_CERT_FILE, cert),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v)))
    .collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SELF_SIGNED_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("istio.io/ca-root".into()),
        data: Some(data),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            write_self_signed(&created, namespace, dir)?;
            Ok(CaSecretSource::Created)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Another replica won the race: use its root.
            let theirs = read(SELF_SIGNED_SECRET).await?.ok_or_else(|| {
                err(format!(
                    "Secret {namespace}/{SELF_SIGNED_SECRET} was created and deleted while starting; start again"
                ))
            })?;
            write_self_signed(&theirs, namespace, dir)?;
            Ok(CaSecretSource::Existing)
        }
        Err(e) => Err(err(format!(
            "creating Secret {namespace}/{SELF_SIGNED_SECRET}: {e}; meshd needs create on secrets in its namespace"
        ))),
    }
}

fn write_self_signed(s: &Secret, namespace: &str, dir: &Path) -> Result<()> {
    let (Some(cert), Some(key)) = (get(s, CA_CERT_FILE), get(s, CA_KEY_FILE)) else {
        return Err(err(format!(
            "Secret {namespace}/{SELF_SIGNED_SECRET} lacks ca-cert.pem or ca-key.pem; delete it to have a new root made"
        )));
    };
    write(dir, ROOT_KEY_FILE, &key)?;
    write(dir, ROOT_CERT_FILE, &cert)
}
