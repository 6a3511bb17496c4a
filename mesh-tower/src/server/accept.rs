//! Accepting inbound connections under the PeerAuthentication mode of the
//! current model.
//!
//! The mode is read from the model for every new connection (existing
//! connections keep the mode they were accepted with):
//!
//! - STRICT: the first bytes must be a TLS ClientHello record (`0x16 0x03`);
//!   anything else is closed without a reply. The handshake requires a
//!   client certificate that chains to the trust bundle and carries a SPIFFE
//!   id of the local trust domain (or an alias).
//! - PERMISSIVE: the first bytes are peeked (not consumed); a ClientHello
//!   goes through the same mTLS handshake as STRICT, anything else is served
//!   as plaintext. A client that sends nothing within the detection timeout
//!   is served as plaintext, like Envoy's protocol detection timeout.
//! - DISABLE: plaintext only; TLS bytes reach the HTTP server as garbage.
//!
//! Not here: HTTP serving (see `serve`) or what a peer may call (authz).

use mesh_core::sync::LockExt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_ca::tls::{self, ClientAuth, PeerPolicy};
use mesh_ca::{CertificateProvider, TrustBundle, WorkloadCertificate};
use mesh_core::model::MtlsMode;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::server::identity::{ConnectionInfo, PeerIdentity};
use crate::server::stream::MeshStream;
use crate::ModelRx;

/// The workload certificate and trust bundle an inbound server uses.
#[derive(Debug, Clone)]
pub struct TlsSource {
    certs: watch::Receiver<Arc<WorkloadCertificate>>,
    trust: watch::Receiver<Arc<TrustBundle>>,
}

impl TlsSource {
    /// Follows the given certificate and trust-bundle channels (rotations
    /// apply to new handshakes).
    pub fn new(
        certs: watch::Receiver<Arc<WorkloadCertificate>>,
        trust: watch::Receiver<Arc<TrustBundle>>,
    ) -> Self {
        TlsSource { certs, trust }
    }

    /// Follows a rotating [`CertificateProvider`].
    pub fn from_provider(provider: &CertificateProvider) -> Self {
        TlsSource::new(provider.certificates(), provider.trust_bundle())
    }

    /// The certificate channel (what handshakes present).
    pub fn certificates(&self) -> watch::Receiver<Arc<WorkloadCertificate>> {
        self.certs.clone()
    }

    /// The trust-bundle channel (what peers are verified against).
    pub fn trust_bundle(&self) -> watch::Receiver<Arc<TrustBundle>> {
        self.trust.clone()
    }

    /// A fixed certificate (its own trust bundle is used).
    pub fn fixed(cert: WorkloadCertificate) -> Self {
        let trust = watch::channel(Arc::new(cert.trust_bundle().clone())).1;
        let certs = watch::channel(Arc::new(cert)).1;
        TlsSource { certs, trust }
    }
}

/// Timeouts of the acceptor.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// How long to wait for the client's first bytes to tell TLS from
    /// plaintext (PERMISSIVE serves plaintext after it; STRICT closes).
    pub detect_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// The workload port to look policies up with; `None` uses the local
    /// port of each connection. Set it when the listener's port differs
    /// from the port the Service targets (e.g. tests binding port 0).
    pub port: Option<u16>,
    /// Look up each connection's pre-redirect destination
    /// (`SO_ORIGINAL_DST`) and use its port and address when iptables sent
    /// it here (a capture port such as 15006); connections made to the
    /// listener directly keep the rule above.
    pub original_dst: bool,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            detect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            port: None,
            original_dst: false,
        }
    }
}

/// Why a connection was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// STRICT mTLS and the client did not start a TLS handshake.
    #[error(
        "port {port} requires mTLS (PeerAuthentication STRICT) but {peer} sent plaintext; closed"
    )]
    PlaintextRefused {
        /// The client.
        peer: SocketAddr,
        /// The workload port.
        port: u16,
    },
    /// The TLS handshake failed (bad chain, expired, foreign trust domain,
    /// no client certificate, ...).
    #[error("mTLS handshake with {peer} failed: {source}")]
    Handshake {
        /// The client.
        peer: SocketAddr,
        /// The TLS error.
        source: io::Error,
    },
    /// The client was too slow.
    #[error("{peer}: {what} timed out")]
    Timeout {
        /// The client.
        peer: SocketAddr,
        /// What timed out.
        what: &'static str,
    },
    /// The rustls config could not be built.
    #[error("cannot build the mTLS server config: {0}")]
    Config(#[from] mesh_ca::Error),
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// The first bytes of a TLS handshake record: content type 22, major version 3.
fn looks_like_tls(prefix: &[u8]) -> bool {
    prefix.len() >= 2 && prefix[0] == 0x16 && prefix[1] == 0x03
}

/// Peeks (without consuming) until two bytes are available, the peer closes
/// or `timeout` passes. Returns the bytes seen.
async fn peek_prefix(tcp: &TcpStream, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 2];
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(None),
        };
        if n >= 2 || n == 0 || buf[0] != 0x16 {
            return Ok(Some(buf[..n].to_vec()));
        }
        // One byte so far: wait a little for the next before peeking again.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if tokio::time::Instant::now() >= deadline {
            return Ok(Some(buf[..n].to_vec()));
        }
    }
}

/// Accepts connections for one workload, applying the mTLS mode of the
/// current model to each.
#[derive(Debug)]
pub struct Acceptor {
    model: ModelRx,
    tls: TlsSource,
    config: AcceptConfig,
    /// The server config for the last seen peer policy.
    cached: Mutex<Option<(PeerPolicy, Arc<rustls::ServerConfig>)>>,
}

impl Acceptor {
    /// An acceptor following `model` and presenting certificates from `tls`.
    pub fn new(model: ModelRx, tls: TlsSource, config: AcceptConfig) -> Self {
        Acceptor {
            model,
            tls,
            config,
            cached: Mutex::new(None),
        }
    }

    /// The acceptor's settings.
    pub fn config(&self) -> &AcceptConfig {
        &self.config
    }

    /// The rustls server config for the model's trust domain and aliases,
    /// rebuilt only when they change.
    fn server_config(&self, policy: PeerPolicy) -> Result<Arc<rustls::ServerConfig>, AcceptError> {
        let mut cached = self.cached.locked();
        if let Some((p, c)) = cached.as_ref() {
            if *p == policy {
                return Ok(c.clone());
            }
        }
        let config = Arc::new(tls::server_config(
            self.tls.certs.clone(),
            self.tls.trust.clone(),
            policy.clone(),
            ClientAuth::Required,
        )?);
        *cached = Some((policy, config.clone()));
        Ok(config)
    }

    /// Applies the port's mTLS mode to a freshly accepted TCP connection:
    /// detects TLS, runs the handshake and reports who the peer is.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer_addr: SocketAddr,
    ) -> Result<(MeshStream, ConnectionInfo), AcceptError> {
        let redirected = if self.config.original_dst {
            super::original_dst::original_dst(&tcp)?
        } else {
            None
        };
        let (local_addr, port) = match redirected {
            Some(dst) => (dst, dst.port()),
            None => {
                let local = tcp.local_addr()?;
                (local, self.config.port.unwrap_or(local.port()))
            }
        };
        let (mode, policy) = {
            let model = self.model.borrow();
            let policy = PeerPolicy::new(model.mesh.trust_domain.clone())
                .with_aliases(model.mesh.trust_domain_aliases.iter().cloned());
            (model.inbound.mtls.mode_for(port), policy)
        };
        let mut info = ConnectionInfo {
            peer_addr,
            local_addr,
            port,
            identity: None,
            sni: None,
        };
        let tls_first = match mode {
            MtlsMode::Disable => false,
            MtlsMode::Strict | MtlsMode::Permissive => {
                match peek_prefix(&tcp, self.config.detect_timeout).await? {
                    Some(prefix) => looks_like_tls(&prefix),
                    None if mode == MtlsMode::Strict => {
                        return Err(AcceptError::Timeout {
                            peer: peer_addr,
                            what: "waiting for the TLS ClientHello",
                        })
                    }
                    None => false,
                }
            }
        };
        if !tls_first {
            if mode == MtlsMode::Strict {
                return Err(AcceptError::PlaintextRefused {
                    peer: peer_addr,
                    port,
                });
            }
            return Ok((MeshStream::Plain(tcp), info));
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config(policy)?);
        let stream =
            match tokio::time::timeout(self.config.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(AcceptError::Handshake {
                        peer: peer_addr,
                        source,
                    })
                }
                Err(_) => {
                    return Err(AcceptError::Timeout {
                        peer: peer_addr,
                        what: "the TLS handshake",
                    })
                }
            };
        let id = tls::server_peer_identity(&stream).map_err(|e| AcceptError::Handshake {
            peer: peer_addr,
            source: io::Error::new(io::ErrorKind::PermissionDenied, e),
        })?;
        info.sni = stream.get_ref().1.server_name().map(str::to_string);
        info.identity = Some(PeerIdentity::new(id));
        Ok((MeshStream::Tls(Box::new(stream)), info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_detection() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1"));
        assert!(!looks_like_tls(b"PRI * HTTP/2.0"));
        assert!(!looks_like_tls(&[0x16]));
        assert!(!looks_like_tls(&[]));
    }
}
