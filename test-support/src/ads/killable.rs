//! An ADS server that can be killed like a crashed control plane.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_xds::server::{AdsServer, SnapshotCache};
use tokio_stream::wrappers::TcpListenerStream;

/// An ADS server on loopback in its own thread and runtime, so that
/// killing it closes every connection at once, as a crashed control
/// plane would. Killed when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Serves `cache` on `addr` (port 0 for any; a fixed one to come back
    /// where a killed server was).
    pub fn start(cache: SnapshotCache, addr: SocketAddr) -> Self {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.set_reuseaddr(true).unwrap();
                sock.bind(addr).unwrap();
                let listener = sock.listen(64).unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = tonic::transport::Server::builder()
                    .add_service(AdsServer::new(cache).into_service())
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime drops every connection task.
            drop(rt);
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Serves `cache` on any free loopback port.
    pub fn any(cache: SnapshotCache) -> Self {
        Self::start(cache, "127.0.0.1:0".parse().unwrap())
    }

    /// Its URL for an xDS client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits until its connections are gone.
    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
