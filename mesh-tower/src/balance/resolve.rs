//! The host-name resolver of the endpoint stage, as a trait: the system's
//! resolver by default, anything else (a DNS client library, a test's
//! scripted answers) through [`EndpointsBuilder::resolver`] or
//! [`MeshBuilder::resolver`]. It only looks names up; when names are looked
//! up again, and what the answers become, is `dns`'s job.
//!
//! [`EndpointsBuilder::resolver`]: super::EndpointsBuilder::resolver
//! [`MeshBuilder::resolver`]: crate::MeshBuilder::resolver

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// The answer to one lookup: the addresses a name resolves to, in the
/// resolver's order, and how long they may be kept when the resolver
/// knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// The addresses, in order: a `DNS_ROUND_ROBIN` (Envoy `LOGICAL_DNS`)
    /// cluster connects to the first only.
    pub addrs: Vec<SocketAddr>,
    /// The answer's TTL, when the resolver knows it (the system resolver
    /// does not). Clusters that respect TTLs look the name up again after
    /// it instead of their refresh rate.
    pub ttl: Option<Duration>,
}

impl Answer {
    /// An answer of `addrs` with no known TTL.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            addrs: addrs.into_iter().collect(),
            ttl: None,
        }
    }

    /// The same answer, valid for `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// The future of [`Resolve::lookup`]. Boxed: lookups are rare (once per
/// name and refresh interval), never per request.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Answer>> + Send + 'a>>;

/// Looks up host names of endpoints (DNS clusters, `resolution: DNS` and
/// `DNS_ROUND_ROBIN` ServiceEntries, and passthrough targets named by
/// host). Implementations must not block the calling thread: do blocking
/// work on `tokio::task::spawn_blocking`, as [`SystemResolver`] does.
///
/// An `Err` keeps the name's last good addresses in use until a later
/// lookup succeeds.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` for connections to `port`.
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system's resolver (`getaddrinfo`, through `tokio::net::lookup_host`,
/// which runs it on tokio's blocking pool). It does not report TTLs, so
/// clusters using it refresh at their refresh rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} has no addresses"),
                ));
            }
            Ok(Answer::new(addrs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_system_resolver_answers_ip_literals_and_localhost() {
        let a = SystemResolver.lookup("127.0.0.2", 8080).await.unwrap();
        assert_eq!(a.addrs, ["127.0.0.2:8080".parse::<SocketAddr>().unwrap()]);
        assert_eq!(a.ttl, None);
        let a = SystemResolver.lookup("localhost", 80).await.unwrap();
        assert!(a
            .addrs
            .iter()
            .all(|s| s.ip().is_loopback() && s.port() == 80));
    }
}
