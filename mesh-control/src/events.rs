//! Acting on ADS stream events: connects and disconnects drive the node
//! table and auto-registration; pushes, ACKs and NACKs feed metrics and
//! the convergence tracker.

use mesh_xds::server::ServerEvent;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::controller::Controller;

/// Handles events until the server is gone.
pub async fn run(ctl: Controller, mut events: broadcast::Receiver<ServerEvent>) {
    loop {
        match events.recv().await {
            Ok(e) => handle(&ctl, e),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    lost = n,
                    "fell behind the ADS server's events; re-reading connected nodes"
                );
                ctl.resync();
                ctl.convergence().poke();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn handle(ctl: &Controller, e: ServerEvent) {
    match e {
        ServerEvent::Connected {
            node,
            stream_id,
            peer,
        } => {
            tracing::debug!(node = node.id, stream_id, ?peer, "ADS stream connected");
            ctl.connected(&node, stream_id, peer);
        }
        ServerEvent::Disconnected { node_id, stream_id } => {
            tracing::debug!(node = node_id, stream_id, "ADS stream disconnected");
            ctl.disconnected(&node_id, stream_id);
        }
        ServerEvent::Pushed {
            type_url, bytes, ..
        } => {
            ctl.metrics().pushed(&type_url);
            ctl.metrics().sent(&type_url, bytes);
        }
        ServerEvent::Acked { .. } => ctl.convergence().poke(),
        ServerEvent::Nacked {
            node_id,
            type_url,
            version,
            message,
        } => {
            tracing::warn!(
                node = node_id,
                type_url,
                version,
                message,
                "client rejected (NACKed) a push; it keeps its previous version"
            );
            ctl.metrics().nacked(&type_url);
            ctl.convergence().poke();
        }
    }
}
