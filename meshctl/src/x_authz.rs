//! `meshctl x authz`.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_core::authz::Request;
use mesh_core::compile::Compiler;

use crate::common::{load_valid, mesh_config, parse_headers, parse_labels, print_json, CliError};

/// Arguments of `meshctl x authz`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or directories of config.
    #[arg(long = "config", required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// MeshConfig file.
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// The workload receiving the request, NS/NAME.
    #[arg(long)]
    workload: String,
    /// Labels of the receiving workload, k=v,...
    #[arg(long, default_value = "")]
    labels: String,
    /// Destination port.
    #[arg(long)]
    port: Option<u16>,
    /// Protocol of the port; defaults to the declared protocol of that port, else http.
    #[arg(long, value_enum)]
    protocol: Option<Proto>,
    /// HTTP method.
    #[arg(long)]
    method: Option<String>,
    /// Request path (raw, as sent).
    #[arg(long)]
    path: Option<String>,
    /// Host/authority.
    #[arg(long)]
    host: Option<String>,
    /// Request header, 'name: value' (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Peer identity from mTLS (with or without spiffe://).
    #[arg(long, conflicts_with = "plaintext")]
    principal: Option<String>,
    /// The caller connects without mTLS.
    #[arg(long)]
    plaintext: bool,
    /// Direct peer IP.
    #[arg(long)]
    source_ip: Option<String>,
    /// Original client IP (X-Forwarded-For).
    #[arg(long)]
    remote_ip: Option<String>,
    /// JWT principal, ISS/SUB.
    #[arg(long)]
    request_principal: Option<String>,
    /// JWT claims as JSON.
    #[arg(long)]
    claims: Option<String>,
    /// The stock gRPC server whose RBAC decision is shown beside the
    /// engine's: grpc (C-core, Go, Java) or grpc-js (Node).
    #[arg(long, value_enum, default_value = "grpc")]
    stock_server: Stock,
}

/// A kind of stock gRPC server.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Stock {
    /// gRPC C-core (Python, C++, ...), grpc-go, grpc-java.
    Grpc,
    /// Node grpc-js-xds.
    GrpcJs,
}

/// Protocol of the destination port.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Proto {
    /// HTTP (any HTTP version, gRPC).
    Http,
    /// Opaque TCP.
    Tcp,
}

/// Explains the authorization decision.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let (namespace, _name) = args
        .workload
        .split_once('/')
        .ok_or_else(|| format!("--workload {:?} is not NAMESPACE/NAME", args.workload))?;
    let mesh = mesh_config(args.mesh_config.as_deref())?;
    let loaded = load_valid(&args.config)?;
    let compiler = Compiler::new(loaded.resources, mesh);
    let labels = parse_labels(&args.labels)?;
    let port = args.port.unwrap_or(80);
    // The protocol of the port as the Services selecting the workload declare it.
    let declared_http = compiler
        .registry()
        .services_of_workload(namespace, &labels)
        .flat_map(|s| s.ports.iter())
        .find(|p| p.target_port.unwrap_or(p.number) == port || p.number == port)
        .map(|p| p.protocol.is_http() || p.protocol_unknown);
    let http = match args.protocol {
        Some(Proto::Http) => true,
        Some(Proto::Tcp) => false,
        None => declared_http.unwrap_or(true),
    };
    let mut req = if http {
        Request::http(
            args.method.as_deref().unwrap_or("GET"),
            args.path.as_deref().unwrap_or("/"),
        )
    } else {
        Request::tcp(port)
    };
    req.port = port;
    if let Some(h) = args.host {
        req.host = h;
    }
    for (n, v) in parse_headers(&args.headers)? {
        req = req.with_header(&n, &v);
    }
    if let Some(p) = &args.principal {
        req = req.with_principal(p);
    }
    let ip = |s: Option<String>, flag: &str| -> Result<Option<std::net::IpAddr>, CliError> {
        s.map(|v| v.parse().map_err(|e| format!("{flag} {v:?}: {e}")))
            .transpose()
    };
    req.source_ip = ip(args.source_ip, "--source-ip")?;
    req.remote_ip = ip(args.remote_ip, "--remote-ip")?;
    req.request_principal = args.request_principal;
    if let Some(c) = args.claims {
        req.claims = serde_json::from_str(&c).map_err(|e| format!("--claims is not JSON: {e}"))?;
    }
    let policies = meshctl::authz::policy_set(&compiler, namespace, labels);
    let stock = match args.stock_server {
        Stock::Grpc => mesh_core::authz::StockServer::Grpc,
        Stock::GrpcJs => mesh_core::authz::StockServer::GrpcJs,
    };
    print_json(&meshctl::authz::explain(&policies, &req, stock))?;
    Ok(ExitCode::SUCCESS)
}
