//! The destination a connection was sent to before iptables redirected it
//! to a capture port (`SO_ORIGINAL_DST`), as Istio's sidecar recovers it:
//! the inbound side learns the workload port a caller dialed, the outbound
//! side the service address the app dialed.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The pre-NAT destination of `tcp`, or `None` when it was not redirected
/// (no conntrack entry, or the destination is the listener itself).
pub fn original_dst(tcp: &TcpStream) -> io::Result<Option<SocketAddr>> {
    let local = tcp.local_addr()?;
    let sock = SockRef::from(tcp);
    let found = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    match found {
        Ok(addr) => Ok(addr.as_socket().filter(|a| *a != local)),
        // ENOENT: conntrack has no NAT entry, so nothing was redirected;
        // ENOPROTOOPT: no netfilter at all.
        Err(e) if matches!(e.raw_os_error(), Some(2) | Some(92)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_connection_nothing_redirected_has_no_original_destination() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(original_dst(&s).unwrap(), None);
    }
}
