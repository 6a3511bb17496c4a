//! `meshctl x authz`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::common::CliError;

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
pub fn run(_args: Args) -> Result<ExitCode, CliError> {
    Err("x authz is being wired".into())
}
