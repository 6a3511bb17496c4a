//! The `meshd` binary: flags (each also from a `MESHD_*` environment
//! variable, then from `--config-file`), logging, and running until Ctrl-C
//! or SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mesh_control::settings::{parse_duration, parse_optional_addr};
use mesh_control::{Meshd, MeshdConfig, SettingsFile};

/// meshd: the mesh's control plane (Istio YAML in, Envoy v3 xDS out, plus the CA).
#[derive(Parser, Debug)]
#[command(name = "meshd", version, about)]
struct Args {
    /// Directory of Istio YAML to serve (watched for changes).
    #[arg(long, env = "MESHD_CONFIG")]
    config: Option<PathBuf>,
    /// Where config comes from: `files` (the --config directory),
    /// `kubernetes` (the API server), or both, comma-separated [default: files].
    #[arg(long, env = "MESHD_SOURCE", value_delimiter = ',', value_parser = ["files", "kubernetes"])]
    source: Vec<String>,
    /// meshd's namespace on the cluster: its CA Secret and leader Lease live there [default: POD_NAMESPACE, else istio-system].
    #[arg(long, env = "MESHD_KUBE_NAMESPACE")]
    kube_namespace: Option<String>,
    /// kubeconfig file for `--source kubernetes` [default: KUBECONFIG, ~/.kube/config, then the pod's service account].
    #[arg(long, env = "MESHD_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// MeshConfig file (Istio's meshConfig: trustDomain, outboundTrafficPolicy, ...).
    #[arg(long, env = "MESHD_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,
    /// Address of the xDS + CA gRPC server [default: 127.0.0.1:15010].
    #[arg(long, env = "MESHD_XDS_ADDR")]
    xds_addr: Option<SocketAddr>,
    /// Address of the xDS + CA gRPC server over TLS, or `off` [default: 127.0.0.1:15012].
    #[arg(long, env = "MESHD_SECURE_XDS_ADDR", value_parser = parse_secure_addr)]
    secure_xds_addr: Option<SecureAddr>,
    /// Address of the admission webhooks (HTTPS, POST /validate and POST /inject), or `off` [default: 127.0.0.1:15017 with --source kubernetes, else off].
    #[arg(long, env = "MESHD_WEBHOOK_ADDR", value_parser = parse_secure_addr)]
    webhook_addr: Option<SecureAddr>,
    /// Image of mesh-shim that the injection webhook (POST /inject) puts in pods [default: mesh-shim:dev].
    #[arg(long, env = "MESHD_SHIM_IMAGE")]
    shim_image: Option<String>,
    /// meshd's TLS xDS + CA port as injected pods reach it, host:port [default: meshd.istio-system.svc:15012].
    #[arg(long, env = "MESHD_INJECT_ADDRESS")]
    inject_address: Option<String>,
    /// Inject the shim as a native sidecar (Kubernetes 1.29+); false: as a regular container [default: true].
    #[arg(long, env = "MESHD_NATIVE_SIDECARS")]
    native_sidecars: Option<bool>,
    /// Address of /healthz, /ready, /metrics, /debug/* [default: 127.0.0.1:15014].
    #[arg(long, env = "MESHD_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// CA directory: keeps the self-signed root, or holds a plugged-in CA [default: a temporary directory].
    #[arg(long, env = "MESHD_CA_DIR")]
    ca_dir: Option<PathBuf>,
    /// Bootstrap token file for the CA ({"tokens": [{"token", "namespace", "serviceAccount"}]}).
    #[arg(long, env = "MESHD_CA_TOKENS")]
    ca_tokens: Option<PathBuf>,
    /// With --source kubernetes: audiences a pod's service account token must be for to authenticate to the CA and the TLS xDS port, comma-separated (Istio's TOKEN_AUDIENCES) [default: istio-ca].
    #[arg(long, env = "MESHD_TOKEN_AUDIENCES", value_delimiter = ',')]
    token_audiences: Vec<String>,
    /// Trust domain of issued identities [default: cluster.local].
    #[arg(long, env = "MESHD_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// Quiet time before a change is applied, e.g. 100ms [default: 100ms].
    #[arg(long, env = "MESHD_DEBOUNCE", value_parser = parse_duration)]
    debounce: Option<std::time::Duration>,
    /// Settings file (YAML) for any of the above; flags and env vars win over it.
    #[arg(long, env = "MESHD_CONFIG_FILE")]
    config_file: Option<PathBuf>,
}

/// `--secure-xds-addr`: an address or `off` (a newtype, as clap reads
/// `Option<Option<_>>` as a flag with an optional value).
#[derive(Debug, Clone, Copy)]
struct SecureAddr(Option<SocketAddr>);

fn parse_secure_addr(s: &str) -> Result<SecureAddr, String> {
    parse_optional_addr(s).map(SecureAddr)
}

fn config(args: Args) -> Result<MeshdConfig, String> {
    let file = match &args.config_file {
        Some(p) => SettingsFile::load(p).map_err(|e| e.to_string())?,
        None => SettingsFile::default(),
    };
    let kubernetes = args.source.iter().any(|s| s == "kubernetes");
    let files = args.source.is_empty() || args.source.iter().any(|s| s == "files");
    let dir = args.config.or(file.config);
    let mut c = match (files, dir) {
        (true, Some(dir)) => MeshdConfig::new(dir),
        (true, None) => {
            return Err(
                "no config directory: pass --config DIR, set MESHD_CONFIG or put `config:` in the settings file (or use --source kubernetes alone)"
                    .into(),
            )
        }
        (false, Some(_)) => {
            return Err(
                "--config was given but --source does not include files; use --source files,kubernetes to serve both"
                    .into(),
            )
        }
        (false, None) => MeshdConfig::kubernetes(Default::default()),
    };
    if kubernetes {
        c.kubernetes = Some(mesh_control::kube::KubeSettings {
            kubeconfig: args.kubeconfig,
        });
        if let Some(ns) = args
            .kube_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
        {
            c.kube_namespace = ns;
        }
    } else if args.kubeconfig.is_some() {
        return Err("--kubeconfig needs --source kubernetes".into());
    }
    c.webhook_addr = match args.webhook_addr {
        Some(a) => a.0,
        None if kubernetes => Some(SocketAddr::from(([127, 0, 0, 1], 15017))),
        None => None,
    };
    c.mesh_config = args.mesh_config.or(file.mesh_config);
    c.xds_addr = args
        .xds_addr
        .or(file.xds_addr)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15010)));
    c.secure_xds_addr = match (args.secure_xds_addr, &file.secure_xds_addr) {
        (Some(a), _) => a.0,
        (None, Some(s)) => {
            parse_optional_addr(s).map_err(|e| format!("settings file secureXdsAddr: {e}"))?
        }
        (None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 15012))),
    };
    c.http_addr = args
        .http_addr
        .or(file.http_addr)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15014)));
    c.ca_dir = args.ca_dir.or(file.ca_dir);
    c.ca_tokens = args.ca_tokens.or(file.ca_tokens);
    if !args.token_audiences.is_empty() {
        c.token_audiences = args.token_audiences;
    }
    if let Some(td) = args.trust_domain.or(file.trust_domain) {
        c.trust_domain = td;
    }
    c.inject.trust_domain = c.trust_domain.clone();
    if let Some(image) = args.shim_image {
        c.inject.shim_image = image;
    }
    if let Some(addr) = args.inject_address {
        c.inject.meshd_address = addr;
    }
    if let Some(native) = args.native_sidecars {
        c.inject.native_sidecars = native;
    }
    if let Some(d) = args.debounce {
        c.debounce = d;
    } else if let Some(d) = &file.debounce {
        c.debounce = parse_duration(d).map_err(|e| format!("settings file debounce: {e}"))?;
    }
    if let Some(p) = &file.poll_interval {
        c.poll_interval =
            parse_duration(p).map_err(|e| format!("settings file pollInterval: {e}"))?;
    }
    Ok(c)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshd: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let meshd = match Meshd::start(config).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("meshd: {e}");
                return ExitCode::from(1);
            }
        };
        // Printed on stdout so scripts that start meshd on port 0 can read them.
        println!("xds {}", meshd.xds_addr());
        println!("http {}", meshd.http_addr());
        if let Some(addr) = meshd.secure_xds_addr() {
            println!("xds-tls {addr}");
        }
        if let Some(addr) = meshd.webhook_addr() {
            println!("webhook {addr}");
        }
        println!("root-cert {}", meshd.root_cert_file().display());
        wait_for_signal().await;
        tracing::info!("shutting down");
        meshd.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
