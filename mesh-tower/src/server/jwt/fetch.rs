//! The built-in [`JwksFetcher`]: one HTTP/1.1 GET per fetch over plain TCP
//! (`http://`) or rustls (`https://`), verifying the issuer's certificate
//! against a configured CA bundle or, by default, the system bundle.
//!
//! Key sets are fetched rarely (see the cache in [`super::jwks`]), so each
//! fetch opens its own connection rather than keeping a pool. Redirects
//! are not followed and bodies over [`MAX_JWKS_BYTES`] are refused.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::jwks::JwksFetcher;
use crate::balance::BoxIo;
use crate::server::authz::BoxFuture;
use crate::tls::roots;

/// The largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// A CA bundle for https issuers that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("JWKS CA bundle {path}: {detail}")]
pub struct FetcherError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub detail: String,
}

/// Where https issuers' certificates are verified against.
enum Roots {
    /// The system bundle, loaded on the first https fetch.
    System(OnceLock<Result<Arc<ClientConfig>, String>>),
    /// A configured bundle.
    Fixed(Arc<ClientConfig>),
}

/// Fetches `http://` and `https://` URIs with hyper (and rustls).
#[derive(Clone)]
pub struct HttpFetcher {
    roots: Arc<Roots>,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots = match *self.roots {
            Roots::System(_) => "system",
            Roots::Fixed(_) => "configured",
        };
        f.debug_struct("HttpFetcher")
            .field("roots", &roots)
            .finish()
    }
}

impl Default for HttpFetcher {
    /// Verifies https issuers against the system CA bundle.
    fn default() -> Self {
        HttpFetcher {
            roots: Arc::new(Roots::System(OnceLock::new())),
        }
    }
}

fn tls_config(roots: RootCertStore) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::builder_with_provider(mesh_ca::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl HttpFetcher {
    /// Verifies https issuers against the PEM CA bundle at `path` (for
    /// issuers with a private CA).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, FetcherError> {
        let path = path.as_ref();
        let err = |detail: String| FetcherError {
            path: path.display().to_string(),
            detail,
        };
        let store = roots::roots_from_file(path).map_err(err)?;
        Self::with_roots(store).map_err(err)
    }

    /// Verifies https issuers against `roots`.
    pub fn with_roots(roots: RootCertStore) -> Result<Self, String> {
        Ok(HttpFetcher {
            roots: Arc::new(Roots::Fixed(Arc::new(tls_config(roots)?))),
        })
    }

    fn tls(&self) -> Result<Arc<ClientConfig>, String> {
        match &*self.roots {
            Roots::Fixed(c) => Ok(c.clone()),
            Roots::System(once) => once
                .get_or_init(|| {
                    let store = roots::system_roots().map_err(|looked| {
                        format!("no system CA bundle found (looked at $SSL_CERT_FILE and {looked}); configure HttpFetcher::with_ca_file")
                    })?;
                    tls_config(store).map(Arc::new)
                })
                .clone(),
        }
    }
}

async fn get(fetcher: HttpFetcher, uri: http::Uri) -> Result<String, String> {
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("jwksUri must be http:// or https://".into()),
    };
    let host = uri.host().ok_or("jwksUri has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // An IPv6 literal comes bracketed in the URI.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: BoxIo = if https {
        let name = ServerName::try_from(bare.clone())
            .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(fetcher.tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        conn.abort();
        return Err(format!("HTTP {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    conn.abort();
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

impl JwksFetcher for HttpFetcher {
    fn fetch(&self, uri: &str, timeout: Duration) -> BoxFuture<Result<String, String>> {
        let fetcher = self.clone();
        let uri = uri.to_string();
        Box::pin(async move {
            let parsed: http::Uri = uri.parse().map_err(|e| format!("bad jwksUri: {e}"))?;
            tokio::time::timeout(timeout, get(fetcher, parsed))
                .await
                .map_err(|_| format!("timed out after {timeout:?}"))?
        })
    }
}
