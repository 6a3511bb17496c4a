//! HTTP/1.1 written by hand, over plain TCP or mTLS: for servers under
//! test that must answer exactly what was sent, malformed or not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_ca::tls::{self, PeerPolicy};
use mesh_ca::{TrustBundle, WorkloadCertificate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::identity::TD;

/// A parsed response (status 0: the server closed without answering).
#[derive(Debug)]
pub struct Reply {
    /// The status code, 0 when there was none.
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    /// Everything after the blank line.
    pub body: String,
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, raw: &str) -> Reply {
    if s.write_all(raw.as_bytes()).await.is_err() {
        return Reply {
            status: 0,
            head: String::new(),
            body: String::new(),
        };
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A raw HTTP/1.1 GET of `path` to `server.default.svc:8080` with
/// `extra_headers` (each ending in CRLF) and `Connection: close`.
pub fn raw_get(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: server.default.svc:8080\r\n{extra_headers}Connection: close\r\n\r\n")
}

/// Sends `raw` over plain TCP and reads until the server closes.
pub async fn plain(addr: SocketAddr, raw: &str) -> Reply {
    exchange(TcpStream::connect(addr).await.unwrap(), raw).await
}

/// Sends `raw` over mTLS presenting `cert` and trusting `server_roots`
/// (servers of trust domain [`TD`]); `Err` when the handshake fails.
pub async fn mtls(
    addr: SocketAddr,
    cert: WorkloadCertificate,
    server_roots: &TrustBundle,
    raw: &str,
) -> Result<Reply, String> {
    let trust = watch::channel(Arc::new(server_roots.clone())).1;
    let td = TD.to_string();
    let certs = watch::channel(Arc::new(cert)).1;
    let config = tls::client_config(Some(certs), trust, PeerPolicy::new(td)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("server.default.svc").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(exchange(tls, raw).await)
}
