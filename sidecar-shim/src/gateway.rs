//! `mesh-shim gateway`: one binary is also the ingress and egress gateway.
//! The Gateways selecting the workload's labels decide the ports, hosts
//! and TLS (SIMPLE, MUTUAL, PASSTHROUGH, certificates from files,
//! `httpsRedirect`); the VirtualServices bound to them route through the
//! SDK's client stack (mesh-tower's `gateway` room). The admin, metrics
//! and readiness ports and the drain are the sidecar's.
//!
//! Config comes from `--config` only: meshd does not send gateway
//! listeners yet, so `--xds-addr` is refused with that reason rather than
//! serving a gateway with no servers.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use mesh_tower::gateway::GatewayServer;
use tokio::task::JoinSet;

use crate::admin;
use crate::app::{bind, build_mesh, check, spawn_signals, Lifecycle};
use crate::config::GatewayArgs;
use crate::error::ShimError;

/// Runs the gateway until it has shut down.
pub async fn run(args: GatewayArgs) -> Result<(), ShimError> {
    check(&args.mesh)?;
    if args.mesh.config.is_none() {
        return Err(ShimError::Usage(
            "mesh-shim gateway reads its Gateways from --config DIR: meshd does not send gateway listeners over xDS yet".into(),
        ));
    }
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let admin_l = bind("admin", loopback(args.admin_port)).await?;
    let metrics_l = bind("metrics", SocketAddr::new(args.bind, args.metrics_port)).await?;
    let ready_l = bind("ready", SocketAddr::new(args.bind, args.ready_port)).await?;
    let life = Arc::new(Lifecycle::default());
    let mut tasks = JoinSet::new();
    tokio::spawn(admin::serve_ready(
        ready_l,
        life.clone(),
        args.drain_timeout,
    ));
    spawn_signals(life.clone());

    let mesh = Arc::new(build_mesh(&args.mesh, true).await?);
    life.set_mesh(mesh.clone());
    let map: BTreeMap<u16, u16> = args.port_map.iter().copied().collect();
    let ip = args.bind;
    let bound = GatewayServer::new(&mesh)
        .drain_timeout(args.drain_timeout)
        .bind(move |port| SocketAddr::new(ip, map.get(&port).copied().unwrap_or(port)))
        .await
        .map_err(|e| ShimError::Usage(e.to_string()))?;
    for (port, addr) in bound.local_addrs() {
        // `gateway-<port>` lets scripts find where each Gateway port went.
        println!("mesh-shim: gateway-{port} listening on {addr}");
    }
    if let Some(gw) = &mesh.current().gateway {
        for e in &gw.errors {
            eprintln!("mesh-shim: not served: {e}");
        }
    }
    tasks.spawn(admin::serve_admin(
        admin_l,
        life.clone(),
        args.drain_timeout,
    ));
    tasks.spawn(admin::serve_metrics(
        metrics_l,
        life.clone(),
        args.drain_timeout,
    ));
    let signal = life.signaled();
    tasks.spawn(async move {
        if let Err(e) = bound.serve_with_shutdown(signal).await {
            tracing::error!(error = %e, "gateway stopped");
        }
    });
    life.mark_ready();
    while tasks.join_next().await.is_some() {}
    println!("mesh-shim: drained, exiting");
    Ok(())
}
