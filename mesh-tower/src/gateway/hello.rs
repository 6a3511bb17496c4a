//! Reading a TLS ClientHello without terminating TLS: the SNI decides
//! which server of a TLS port takes the connection (and, for PASSTHROUGH,
//! where its bytes go), before anything is answered.
//!
//! [`parse`] is a pure function over the bytes received so far (tested
//! without sockets); [`read_hello`] reads until it has an answer, and
//! [`Replay`] hands the bytes it read back to whoever reads next (the
//! rustls acceptor, or the upstream of a passthrough connection), so the
//! ClientHello is never consumed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Larger handshakes than this are not read (a ClientHello is a few
/// hundred bytes; post-quantum key shares make it a few KiB).
const MAX_HELLO: usize = 64 * 1024;

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not complete yet: read more.
    Partial,
    /// Not a TLS ClientHello (or a malformed one).
    NotTls,
    /// A complete ClientHello, with its SNI host name when it has one.
    Complete {
        /// The `server_name` extension's host name (lowercase).
        sni: Option<String>,
    },
}

/// Parses the TLS records at the start of `buf` for a ClientHello
/// (possibly fragmented over several records).
pub fn parse(buf: &[u8]) -> Hello {
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return Hello::Partial;
        };
        if header[0] != 0x16 || header[1] != 0x03 {
            return Hello::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let Some(payload) = buf.get(at + 5..at + 5 + len) else {
            return Hello::Partial;
        };
        handshake.extend_from_slice(payload);
        at += 5 + len;
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != 1 {
            return Hello::NotTls;
        }
        let body_len = (usize::from(handshake[1]) << 16)
            | (usize::from(handshake[2]) << 8)
            | usize::from(handshake[3]);
        if body_len > MAX_HELLO {
            return Hello::NotTls;
        }
        if let Some(body) = handshake.get(4..4 + body_len) {
            return match client_hello_sni(body) {
                Some(sni) => Hello::Complete { sni },
                None => Hello::NotTls,
            };
        }
    }
}

/// A cursor over big-endian TLS vectors.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The SNI of a ClientHello body: `Some(None)` without the extension,
/// `None` when the body is malformed.
fn client_hello_sni(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None);
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// Reads from `io` until the bytes hold a complete ClientHello or are not
/// one, for at most `timeout`. Returns what was read and what it is.
pub async fn read_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> io::Result<(Vec<u8>, Hello)> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            match parse(&buf) {
                Hello::Partial if buf.len() <= MAX_HELLO + 64 => {}
                Hello::Partial => return Ok(Hello::NotTls),
                done => return Ok(done),
            }
            let mut chunk = [0u8; 4096];
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed before its TLS ClientHello was complete",
                ));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    };
    let hello = tokio::time::timeout(timeout, read).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, "waiting for the TLS ClientHello")
    })??;
    Ok((buf, hello))
}

pin_project_lite::pin_project! {
    /// A stream whose first reads return `prefix` (bytes already read from
    /// `inner`), then continue from `inner`; writes go to `inner`.
    pub struct Replay<S> {
        prefix: Vec<u8>,
        at: usize,
        #[pin]
        inner: S,
    }
}

impl<S> Replay<S> {
    /// Replays `prefix` before the rest of `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let rest = this.prefix.get(*this.at..).unwrap_or_default();
        if rest.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(rest.get(..n).unwrap_or_default());
        *this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    /// The first flight of a real rustls client for `sni`.
    fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let provider = mesh_ca::crypto::provider();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut config = config;
        config.enable_sni = sni.is_some();
        let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("127.0.0.1").to_string())
            .unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_sni_of_a_real_client_hello() {
        let hello = client_hello(Some("Bookinfo.Example.com"));
        assert_eq!(
            parse(&hello),
            Hello::Complete {
                sni: Some("bookinfo.example.com".into())
            }
        );
        // Every prefix is partial, never a wrong answer.
        for cut in [0, 3, 5, 40, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), Hello::Partial, "cut at {cut}");
        }
        assert_eq!(parse(&client_hello(None)), Hello::Complete { sni: None });
    }

    #[test]
    fn fragmented_records_are_joined() {
        let hello = client_hello(Some("a.example.com"));
        let payload = &hello[5..];
        let (first, second) = payload.split_at(10);
        let mut split = vec![0x16, 0x03, 0x01, 0, first.len() as u8];
        split.extend_from_slice(first);
        split.extend_from_slice(&[0x16, 0x03, 0x01]);
        split.extend_from_slice(&(second.len() as u16).to_be_bytes());
        split.extend_from_slice(second);
        assert_eq!(
            parse(&split),
            Hello::Complete {
                sni: Some("a.example.com".into())
            }
        );
    }

    #[test]
    fn plaintext_and_garbage_are_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(b"PRI * HTTP/2.0"), Hello::NotTls);
        // A handshake record that is not a ClientHello.
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0, 4, 2, 0, 0, 0]), Hello::NotTls);
        // A ClientHello whose body is cut short inside its own length.
        assert_eq!(
            parse(&[0x16, 0x03, 0x01, 0, 6, 1, 0, 0, 2, 3, 3]),
            Hello::NotTls
        );
    }

    #[tokio::test]
    async fn replay_returns_the_prefix_then_the_rest() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"world")
            .await
            .unwrap();
        drop(a);
        let mut r = Replay::new(b"hello ".to_vec(), b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
