//! `meshctl x route`.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_core::compile::Compiler;
use mesh_core::host::fqdn;
use mesh_core::model::Client;
use mesh_core::route::{self, ExplainRequest};

use crate::common::{load_valid, mesh_config, parse_headers, parse_labels, print_json, CliError};

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
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mesh = mesh_config(args.mesh_config.as_deref())?;
    let loaded = load_valid(&args.config)?;
    let compiler = Compiler::new(loaded.resources, mesh);
    let client = Client::new(args.source_namespace, parse_labels(&args.source_labels)?);
    let suffix = compiler.settings().domain_suffix.clone();
    // The host as the SDK resolves it for this client (one resolver,
    // mesh_core::host, through the compiled model); a name no service
    // answers to is qualified as a resource's host would be.
    let model = compiler.compile(&client);
    let resolved = args
        .port
        .and_then(|p| model.resolve_outbound(&args.host, p, &mut String::new()))
        .map(|s| s.host.as_str())
        .or_else(|| model.resolve_host(&args.host));
    let host = resolved.map_or_else(
        || fqdn(&args.host, &client.namespace, &suffix),
        str::to_string,
    );
    // Without --port, a service with a single port is unambiguous.
    let port = args.port.or_else(|| {
        let mut ports = model.ports_of(&host);
        match (ports.next(), ports.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    });
    let scope = compiler.scope(&client);
    let vss = route::virtual_services(scope.virtual_services());
    let request = ExplainRequest {
        host,
        port,
        method: args.method,
        path: args.path,
        headers: parse_headers(&args.headers)?,
    };
    let explanation = route::explain(&vss, &client, &request, &suffix);
    print_json(&explanation)?;
    Ok(ExitCode::SUCCESS)
}
