//! The seam where a connection to one endpoint is opened.
//!
//! [`Connector`] opens the byte stream: [`TcpConnector`] plain TCP,
//! [`crate::tls::TlsConnector`] TLS or mesh mTLS on top of it, deciding
//! from the endpoint's [`ConnectTarget::identity`] and
//! [`ConnectTarget::tls_mode`] and the cluster's [`ConnectTarget::tls`].
//! `Dialer` puts a cluster's facts around a `Connector` for its pools,
//! adding the connect timeout and connection counting.

use mesh_core::sync::RwLockExt;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mesh_core::config::networking::destination_rule::ClientTlsSettings;
use mesh_core::registry::TlsMode;
use tokio::io::{AsyncRead, AsyncWrite};

use super::stats::ClusterStats;
use crate::BoxError;

/// A byte stream to an endpoint.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed stream.
pub type BoxIo = Box<dyn Io>;

/// A boxed connect future.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>>;

/// TCP keepalive settings (`connectionPool.tcp.tcpKeepalive`); `None`
/// fields keep the OS default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before probes.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Probes before the connection is dead.
    pub probes: Option<u32>,
}

/// What to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// Endpoint address.
    pub addr: SocketAddr,
    /// Cluster name.
    pub cluster: String,
    /// The service host (the TLS server name a TLS connector would send).
    pub host: String,
    /// The endpoint's SPIFFE identity, when known.
    pub identity: Option<String>,
    /// Whether the endpoint takes Istio mTLS.
    pub tls_mode: TlsMode,
    /// TCP keepalive, when configured.
    pub keepalive: Option<Keepalive>,
    /// The cluster's DestinationRule TLS settings; `None` lets auto-mTLS
    /// decide.
    pub tls: Option<Arc<ClientTlsSettings>>,
    /// True when the pool speaks HTTP/2 on this connection (TLS offers
    /// ALPN `h2`, else `http/1.1`).
    pub http2: bool,
}

/// Opens streams to endpoints. Implementations must not apply the connect
/// timeout themselves (the pool does).
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `target`.
    fn connect(&self, target: ConnectTarget) -> ConnectFuture;
}

/// Plain TCP with `TCP_NODELAY` and the configured keepalive.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, target: ConnectTarget) -> ConnectFuture {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(target.addr).await?;
            stream.set_nodelay(true)?;
            if let Some(ka) = target.keepalive {
                let mut k = socket2::TcpKeepalive::new();
                if let Some(t) = ka.time {
                    k = k.with_time(t);
                }
                if let Some(i) = ka.interval {
                    k = k.with_interval(i);
                }
                #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
                if let Some(p) = ka.probes {
                    k = k.with_retries(p);
                }
                socket2::SockRef::from(&stream).set_tcp_keepalive(&k)?;
            }
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// Per-endpoint facts the connector needs, by address.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndpointMeta {
    pub identity: Option<String>,
    pub tls_mode: Option<TlsMode>,
}

/// Opens connections for one cluster's pools: finds the endpoint's
/// identity and TLS mode, applies the connect timeout (TLS handshake
/// included) and counts open connections and failed attempts.
pub(crate) struct Dialer {
    pub connector: Arc<dyn Connector>,
    pub cluster: Arc<str>,
    pub host: Arc<str>,
    pub meta: Arc<RwLock<HashMap<SocketAddr, EndpointMeta>>>,
    pub connect_timeout: Duration,
    pub keepalive: Option<Keepalive>,
    pub stats: Arc<ClusterStats>,
    pub tls: Option<Arc<ClientTlsSettings>>,
}

impl Dialer {
    /// A stream to `addr`, offering HTTP/2 over TLS when `http2`.
    pub async fn dial(&self, addr: SocketAddr, http2: bool) -> Result<MeshConn, BoxError> {
        let meta = self
            .meta
            .read_locked()
            .get(&addr)
            .cloned()
            .unwrap_or_default();
        let target = ConnectTarget {
            addr,
            cluster: self.cluster.to_string(),
            host: self.host.to_string(),
            identity: meta.identity,
            tls_mode: meta.tls_mode.unwrap_or(TlsMode::Disabled),
            keepalive: self.keepalive,
            tls: self.tls.clone(),
            http2,
        };
        let fut = self.connector.connect(target);
        let io = match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                self.stats.inc_connect_failures();
                return Err(e.into());
            }
            Err(_) => {
                self.stats.inc_connect_failures();
                return Err(format!(
                    "connect to {addr} timed out after {:?}",
                    self.connect_timeout
                )
                .into());
            }
        };
        self.stats.conn_opened();
        Ok(MeshConn {
            io: TokioIo::new(io),
            stats: self.stats.clone(),
        })
    }
}

/// A pooled connection; counts itself closed when dropped.
pub(crate) struct MeshConn {
    io: TokioIo<BoxIo>,
    stats: Arc<ClusterStats>,
}

impl Drop for MeshConn {
    fn drop(&mut self) {
        self.stats.conn_closed();
    }
}

impl hyper::rt::Read for MeshConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
