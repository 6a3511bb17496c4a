//! `meshctl x route`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::common::CliError;

/// Arguments of `meshctl x route`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or directories of config.
    #[arg(long = "config", required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// MeshConfig file.
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// Destination host, short (resolved in the source namespace) or fully qualified.
    #[arg(long)]
    host: String,
    /// Destination port.
    #[arg(long)]
    port: Option<u16>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path, with query string if any.
    #[arg(long, default_value = "/")]
    path: String,
    /// Request header, 'name: value' (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Namespace of the calling workload.
    #[arg(long, default_value = "default")]
    source_namespace: String,
    /// Labels of the calling workload, k=v,...
    #[arg(long, default_value = "")]
    source_labels: String,
}

/// Explains the routing decision.
pub fn run(_args: Args) -> Result<ExitCode, CliError> {
    Err("x route is being wired".into())
}
