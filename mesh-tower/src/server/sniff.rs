//! Protocol detection for inbound ports no Service declares, as a sidecar
//! does it: look at the first bytes the client sends. An HTTP/1.x method
//! or the HTTP/2 preface means HTTP; anything else, or silence until the
//! timeout (a server-first protocol such as MySQL, whose client waits for
//! the server's greeting), means opaque TCP. Declared ports are never
//! sniffed, so a server-first protocol on a declared port never waits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the first bytes said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// HTTP/1.x or HTTP/2 (prior knowledge).
    Http,
    /// Anything else: proxy the bytes as they are.
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// `Some` once `prefix` decides; `None` while it could still become HTTP.
fn decide(prefix: &[u8], done: bool) -> Option<Sniffed> {
    let candidates = METHODS.iter().copied().chain([H2_PREFACE]);
    let mut open = false;
    for c in candidates {
        let n = prefix.len().min(c.len());
        if prefix[..n] == c[..n] {
            if prefix.len() >= c.len() || (c == H2_PREFACE && prefix.len() >= 4) {
                return Some(Sniffed::Http);
            }
            open = true;
        }
    }
    match (open, done) {
        (true, false) => None,
        _ => Some(Sniffed::Opaque),
    }
}

/// Reads the first bytes of `io` (for up to `timeout`) and says what they
/// are; the returned stream replays them before the rest.
pub async fn sniff<S>(mut io: S, timeout: Duration) -> io::Result<(Sniffed, Rewind<S>)>
where
    S: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut prefix = Vec::with_capacity(16);
    let mut buf = [0u8; 16];
    let verdict = loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => break decide(&prefix, true).unwrap_or(Sniffed::Opaque),
            Ok(Ok(0)) => break Sniffed::Opaque,
            Ok(Ok(n)) => {
                prefix.extend_from_slice(&buf[..n]);
                if let Some(v) = decide(&prefix, false) {
                    break v;
                }
            }
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((
        verdict,
        Rewind {
            prefix,
            at: 0,
            inner: io,
        },
    ))
}

/// A stream whose first bytes were read already: they are read again
/// first.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn http_methods_and_the_h2_preface_are_http_and_replayed() {
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(first).await.unwrap();
            let (v, mut s) = sniff(server, Duration::from_millis(100)).await.unwrap();
            assert_eq!(v, Sniffed::Http, "{first:?}");
            let mut got = vec![0u8; first.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, first);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_method_split_across_reads_waits_for_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PO").await.unwrap();
        let t = tokio::spawn(sniff(server, Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.write_all(b"ST /x HTTP/1.1\r\n").await.unwrap();
        assert_eq!(t.await.unwrap().unwrap().0, Sniffed::Http);
    }

    #[tokio::test(start_paused = true)]
    async fn binary_bytes_and_silence_are_opaque() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"\x00\x01redis").await.unwrap();
        assert_eq!(
            sniff(server, Duration::from_millis(100)).await.unwrap().0,
            Sniffed::Opaque
        );
        // A server-first client says nothing: after the timeout it is TCP,
        // and the server may speak first.
        let (_client, server) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        let (v, _) = sniff(server, Duration::from_millis(100)).await.unwrap();
        assert_eq!(v, Sniffed::Opaque);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
