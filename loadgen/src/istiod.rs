//! How to run istiod's `pilot-discovery` with no Kubernetes at all, on a
//! directory of Istio YAML: the one command line both the load generator
//! and the differential tests (`tests/src/istiod.rs`) start it with.

use std::net::SocketAddr;
use std::path::Path;

use tokio::process::Command;

/// The MeshConfig istiod runs with: the same defaults meshd assumes.
pub const MESH_CONFIG: &str = "trustDomain: cluster.local
rootNamespace: istio-system
enableAutoMtls: true
outboundTrafficPolicy: {mode: ALLOW_ANY}
defaultConfig:
  discoveryAddress: 127.0.0.1:15010
";

/// Where istiod listens (all on loopback).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Plaintext xDS (`--grpcAddr`).
    pub xds: SocketAddr,
    /// Debug HTTP, `/ready` (`--httpAddr`).
    pub http: SocketAddr,
    /// Metrics (`--monitoringAddr`).
    pub monitoring: SocketAddr,
    /// ControlZ (`--ctrlz_port`).
    pub ctrlz: u16,
}

/// Sets the arguments and the whole environment of a kube-less
/// `pilot-discovery discovery` over the YAML in `config_dir`: no CA, no
/// TLS ports, files (the MeshConfig at `mesh_config`, `HOME`) in
/// `scratch`, the pod named `pod_name`, debouncing at `debounce` (after,
/// max). The caller adds where the output goes.
pub fn configure(
    cmd: &mut Command,
    config_dir: &Path,
    mesh_config: &Path,
    scratch: &Path,
    ports: &Ports,
    pod_name: &str,
    debounce: (&str, &str),
) {
    cmd.arg("discovery")
        .arg("--registries=")
        .arg(format!("--configDir={}", config_dir.display()))
        .arg(format!("--meshConfig={}", mesh_config.display()))
        .arg(format!(
            "--networksConfig={}",
            scratch.join("none").display()
        ))
        .arg(format!("--grpcAddr={}", ports.xds))
        .arg("--secureGRPCAddr=")
        .arg(format!("--httpAddr={}", ports.http))
        .arg("--httpsAddr=")
        .arg(format!("--monitoringAddr={}", ports.monitoring))
        .arg("--ctrlz_address=127.0.0.1")
        .arg(format!("--ctrlz_port={}", ports.ctrlz))
        .arg("--domain=cluster.local")
        .arg("--clusterID=Kubernetes")
        .arg("--shutdownDuration=1ms")
        .arg("--log_output_level=default:info")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch)
        .env("ENABLE_CA_SERVER", "false")
        .env("PILOT_CERT_PROVIDER", "none")
        .env("POD_NAMESPACE", "istio-system")
        .env("POD_NAME", pod_name)
        .env("REVISION", "default")
        .env("CLUSTER_ID", "Kubernetes")
        .env("ISTIOD_CUSTOM_HOST", "istiod.istio-system.svc")
        .env("PILOT_DEBOUNCE_AFTER", debounce.0)
        .env("PILOT_DEBOUNCE_MAX", debounce.1)
        .env("GOMAXPROCS", "2");
}
