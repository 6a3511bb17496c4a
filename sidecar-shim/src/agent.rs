//! `mesh-shim agent`: the proxyless gRPC agent, what Istio's `grpc-agent`
//! injection template runs beside a gRPC app. It carries no traffic: it
//! writes the gRPC xDS bootstrap (`GRPC_XDS_BOOTSTRAP`) naming meshd and
//! the certificate files, obtains the workload certificate from meshd's CA
//! and keeps `cert-chain.pem`, `key.pem` and `root-cert.pem` fresh in the
//! certificate directory (rotated at half-life, before expiry), and
//! answers readiness (`/healthz/ready`) once both are on disk. Stock gRPC
//! (grpc-go, grpc-java, grpcio, grpc-js-xds) then reads the files itself:
//! the xDS channel over TLS with the workload certificate (gRFC A65) and
//! xDS-configured mTLS through the `file_watcher` provider (gRFC A29).
//!
//! Not here: the bootstrap's shape (`mesh_xds::bootstrap`, shared with
//! `meshctl bootstrap grpc`), the CA client and rotation
//! (`mesh_tower::source::ca`, as `mesh-shim run` uses them).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use mesh_core::model::Client;
use mesh_tower::CaOptions;
use mesh_xds::bootstrap::{ChannelCreds, GrpcBootstrap};
use mesh_xds::node::NodeInfo;

use crate::app::{bind, spawn_signals, Lifecycle};
use crate::config::Labels;
use crate::error::ShimError;

/// `mesh-shim agent` flags (the workload flags named as in `run`).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The xDS server the gRPC app talks to: `https://HOST:PORT` (meshd's
    /// 15012; the channel uses the workload certificate) or
    /// `http://HOST:PORT` / `HOST:PORT` (plaintext 15010).
    #[arg(long, env = "MESH_SHIM_XDS_ADDR")]
    pub xds_addr: String,
    /// The mesh CA (meshd) to get the workload certificate from, `HOST:PORT`.
    #[arg(long, env = "MESH_SHIM_CA_ADDR")]
    pub ca_addr: String,
    /// PEM roots that verify the CA (meshd's root-cert.pem).
    #[arg(long, env = "MESH_SHIM_CA_ROOT")]
    pub ca_root: PathBuf,
    /// The DNS name on the CA's certificate.
    #[arg(
        long,
        env = "MESH_SHIM_CA_SERVER_NAME",
        default_value = "meshd.istio-system.svc"
    )]
    pub ca_server_name: String,
    /// A file holding the CA's bootstrap token.
    #[arg(long, env = "MESH_SHIM_CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,
    /// Trust domain of the workload identity.
    #[arg(long, env = "MESH_SHIM_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// The workload's namespace.
    #[arg(long, env = "MESH_SHIM_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The workload's service account (its SPIFFE identity).
    #[arg(long, env = "MESH_SHIM_SERVICE_ACCOUNT")]
    pub service_account: String,
    /// The workload's labels, `k=v,k2=v2`.
    #[arg(long, env = "MESH_SHIM_LABELS", value_parser = crate::config::parse_labels, default_value = "")]
    pub labels: Labels,
    /// The workload (Deployment) name, `WORKLOAD_NAME` in the node.
    #[arg(long, env = "MESH_SHIM_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// The pod's name, for the node id (`sidecar~IP~POD.NS~NS.svc.cluster.local`).
    #[arg(long, env = "MESH_SHIM_POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's IP, for the node id and `INSTANCE_IPS`.
    #[arg(long, env = "MESH_SHIM_INSTANCE_IP")]
    pub instance_ip: Option<String>,
    /// `CLUSTER_ID` in the node metadata.
    #[arg(long, env = "MESH_SHIM_CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    /// `MESH_ID` in the node metadata [default: the trust domain].
    #[arg(long, env = "MESH_SHIM_MESH_ID")]
    pub mesh_id: Option<String>,
    /// Where the bootstrap JSON is written (what `GRPC_XDS_BOOTSTRAP` names).
    #[arg(
        long,
        env = "MESH_SHIM_BOOTSTRAP_FILE",
        default_value = "/etc/istio/proxy/grpc-bootstrap.json"
    )]
    pub bootstrap_file: PathBuf,
    /// Where `cert-chain.pem`, `key.pem` and `root-cert.pem` are written
    /// and kept fresh.
    #[arg(
        long,
        env = "MESH_SHIM_CERT_DIR",
        default_value = "/var/lib/istio/data"
    )]
    pub cert_dir: PathBuf,
    /// Where the readiness port binds.
    #[arg(long, env = "MESH_SHIM_INBOUND_ADDR", default_value = "0.0.0.0")]
    pub ready_addr: IpAddr,
    /// Readiness port (`/healthz/ready`).
    #[arg(long, env = "MESH_SHIM_READY_PORT", default_value_t = 15021)]
    pub ready_port: u16,
    /// How long to wait for the first certificate.
    #[arg(long, env = "MESH_SHIM_READY_TIMEOUT", value_parser = crate::config::parse_duration, default_value = "30s")]
    pub ready_timeout: Duration,
}

/// The bootstrap for `a`: the xDS server without its scheme, TLS with the
/// certificate files for `https://`.
pub fn bootstrap(a: &AgentArgs) -> GrpcBootstrap {
    let (channel, uri) = match a.xds_addr.split_once("://") {
        Some(("https", rest)) => (ChannelCreds::MutualTls, rest),
        Some((_, rest)) => (ChannelCreds::Insecure, rest),
        None => (ChannelCreds::Insecure, a.xds_addr.as_str()),
    };
    let ip = a.instance_ip.clone().filter(|ip| !ip.is_empty());
    let pod = a.pod_name.clone().filter(|p| !p.is_empty());
    let id = match &pod {
        Some(pod) => format!(
            "sidecar~{}~{pod}.{ns}~{ns}.svc.cluster.local",
            ip.as_deref().unwrap_or("127.0.0.1"),
            ns = a.namespace
        ),
        None => String::new(),
    };
    GrpcBootstrap {
        server_uri: uri.trim_end_matches('/').to_string(),
        channel,
        node: NodeInfo {
            id,
            namespace: Some(a.namespace.clone()),
            labels: a.labels.0.iter().cloned().collect(),
            service_account: Some(a.service_account.clone()),
            cluster_id: Some(a.cluster_id.clone()),
            mesh_id: Some(a.mesh_id.clone().unwrap_or_else(|| a.trust_domain.clone())),
            workload_name: a.workload_name.clone().or(pod),
            instance_ips: ip.into_iter().collect(),
            proxyless_grpc: true,
            ..NodeInfo::default()
        },
        cert_dir: Some(a.cert_dir.clone()),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// gRPC library starting meanwhile never reads half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(args: AgentArgs) -> Result<(), ShimError> {
    let ready = bind("ready", SocketAddr::new(args.ready_addr, args.ready_port)).await?;
    let life = Arc::new(Lifecycle::default());
    tokio::spawn(crate::admin::serve_ready(
        ready,
        life.clone(),
        Duration::ZERO,
    ));
    spawn_signals(life.clone());

    let mut ca = CaOptions::new(
        args.ca_addr.clone(),
        args.ca_server_name.clone(),
        args.ca_root.clone(),
    );
    ca.token_file = args.ca_token_file.clone();
    ca.output_dir = Some(args.cert_dir.clone());
    ca.timeout = args.ready_timeout;
    let mut client = Client::new(
        args.namespace.clone(),
        args.labels.0.iter().cloned().collect(),
    );
    client.service_account = Some(args.service_account.clone());
    // Rotation writes every new certificate into the directory; the
    // provider keeps rotating for as long as it lives.
    let provider = mesh_tower::source::ca::start_identity(&ca, &client, &args.trust_domain).await?;
    println!(
        "mesh-shim: certificate for {} in {}",
        provider.current().identity(),
        args.cert_dir.display()
    );

    let doc = bootstrap(&args).to_json();
    let text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    write_atomic(&args.bootstrap_file, &text).map_err(|e| {
        ShimError::Usage(format!(
            "cannot write the gRPC bootstrap {}: {e}; check --bootstrap-file and that its directory is writable",
            args.bootstrap_file.display()
        ))
    })?;
    println!(
        "mesh-shim: gRPC bootstrap in {}",
        args.bootstrap_file.display()
    );
    life.mark_ready();
    life.signaled().await;
    drop(provider);
    println!("mesh-shim: agent stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn parse(extra: &[&str]) -> AgentArgs {
        let mut argv = vec![
            "mesh-shim",
            "agent",
            "--ca-addr",
            "meshd:15012",
            "--ca-root",
            "/r.pem",
            "--service-account",
            "cart",
            "--namespace",
            "shop",
        ];
        argv.extend(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Agent(a) => *a,
            _ => panic!("agent"),
        }
    }

    #[test]
    fn https_xds_uses_the_certificate_files_and_pod_names_the_node() {
        let a = parse(&[
            "--xds-addr",
            "https://meshd.istio-system.svc:15012",
            "--pod-name",
            "cart-7d9-x",
            "--instance-ip",
            "10.1.2.3",
            "--labels",
            "app=cart",
        ]);
        let b = bootstrap(&a);
        assert_eq!(b.server_uri, "meshd.istio-system.svc:15012");
        assert_eq!(b.channel, ChannelCreds::MutualTls);
        assert_eq!(
            b.node.id,
            "sidecar~10.1.2.3~cart-7d9-x.shop~shop.svc.cluster.local"
        );
        assert_eq!(b.node.mesh_id.as_deref(), Some("cluster.local"));
        let doc = b.to_json();
        assert_eq!(
            doc["certificate_providers"]["default"]["config"]["private_key_file"],
            "/var/lib/istio/data/key.pem"
        );
        assert_eq!(doc["node"]["metadata"]["LABELS"]["app"], "cart");
    }

    #[test]
    fn plaintext_xds_and_empty_downward_values() {
        let a = parse(&[
            "--xds-addr",
            "127.0.0.1:15010",
            "--pod-name",
            "",
            "--instance-ip",
            "",
        ]);
        let b = bootstrap(&a);
        assert_eq!(b.channel, ChannelCreds::Insecure);
        assert_eq!(b.server_uri, "127.0.0.1:15010");
        assert!(b.node.instance_ips.is_empty());
        // No pod name: the default id from the node writer.
        assert!(b.to_json()["node"]["id"]
            .as_str()
            .unwrap()
            .starts_with("sidecar~"));
    }
}
