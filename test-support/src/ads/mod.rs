//! Driving the ADS server from a test: the test plays the client (SotW
//! [`Client`] or [`Delta`]) and decides when it ACKs; small resources to
//! serve; and the servers it talks to, in process or on loopback.
//!
//! Tests that check the server *stayed silent* serve over in-process
//! pipes ([`serve`]) on tokio's paused clock: no socket is involved, so
//! the clock only moves once the server has nothing left to do, and
//! [`Client::silent`] says "nothing else was sent" rather than "nothing
//! arrived within 300 ms of wall time". Tests that need a socket (a
//! peer address, many streams under load, an `XdsClient`) use
//! [`serve_tcp`] or [`TestServer`].

mod delta;
mod killable;
mod resources;
mod sotw;

use std::io;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_xds::server::{AdsServer, SnapshotCache};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

pub use delta::Delta;
pub use killable::TestServer;
pub use resources::{
    add_locality, break_routes, cluster, cluster_names, listener, route_targets, routes, snapshot,
};
pub use sotw::{Client, SILENCE};

/// The node id the scripted clients use unless told otherwise.
pub const NODE: &str = "grpc-client-1";

/// How a client reaches a test ADS server.
#[derive(Clone, Debug)]
pub enum Address {
    /// Loopback TCP.
    Tcp(SocketAddr),
    /// In-process pipes: each connection is a new duplex pair handed to
    /// the server.
    Memory(mpsc::UnboundedSender<DuplexStream>),
}

impl Address {
    /// A gRPC channel to the server (connected).
    pub async fn channel(&self) -> Channel {
        match self {
            Address::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap_or_else(|e| panic!("connect to the test ADS server {addr}: {e}")),
            Address::Memory(pipes) => {
                let pipes = pipes.clone();
                Endpoint::from_static("http://ads.in-memory.test")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let pipes = pipes.clone();
                        async move {
                            let (client, server) = tokio::io::duplex(1 << 20);
                            pipes.send(server).map_err(|_| {
                                io::Error::other("the in-memory ADS server is gone")
                            })?;
                            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(client))
                        }
                    }))
                    .await
                    .unwrap()
            }
        }
    }

    /// The loopback address; panics for an in-memory server.
    pub fn socket(&self) -> SocketAddr {
        match self {
            Address::Tcp(addr) => *addr,
            Address::Memory(_) => panic!("an in-memory ADS server has no socket address"),
        }
    }
}

/// Serves ADS and CSDS of `server` over in-process pipes, on this runtime.
pub fn serve(server: AdsServer) -> Address {
    let (tx, rx) = mpsc::unbounded_channel::<DuplexStream>();
    let incoming = UnboundedReceiverStream::new(rx).map(Ok::<_, io::Error>);
    let csds = server.csds().into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .add_service(csds)
            .serve_with_incoming(incoming),
    );
    Address::Memory(tx)
}

/// Serves ADS and CSDS of `server` on a loopback port, on this runtime.
pub async fn serve_tcp(server: AdsServer) -> Address {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let csds = server.csds().into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .add_service(csds)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Address::Tcp(addr)
}

/// A node with only an id.
pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        ..Default::default()
    }
}

/// A SotW stream as [`NODE`] to an in-process server over `cache`.
pub async fn start(cache: SnapshotCache) -> Client {
    Client::connect(&serve(AdsServer::new(cache)), node(NODE)).await
}
