//! `meshctl analyze`.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_core::analyze::{analyze, has_errors, Severity};

use crate::common::{load, mesh_config, print_json, CliError};

/// Arguments of `meshctl analyze`.
#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    output: Output,
    /// MeshConfig file (rootNamespace, trustDomain, pathNormalization, ...).
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// Files or directories of Istio/Kubernetes YAML or JSON.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Runs the analyzer and prints findings.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mesh = mesh_config(args.mesh_config.as_deref())?;
    let loaded = load(&args.paths)?;
    let findings = analyze(&loaded, &mesh);
    match args.output {
        Output::Json => print_json(&serde_json::json!({ "findings": findings }))?,
        Output::Text => {
            for f in &findings {
                println!("{f}");
            }
            let count = |s| findings.iter().filter(|f| f.severity == s).count();
            println!(
                "{} resources analyzed: {} errors, {} warnings, {} info",
                loaded.resources.len(),
                count(Severity::Error),
                count(Severity::Warning),
                count(Severity::Info)
            );
        }
    }
    Ok(if has_errors(&findings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
