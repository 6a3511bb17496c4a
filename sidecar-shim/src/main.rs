//! The `mesh-shim` binary: flags to [`sidecar_shim::config`], then
//! [`sidecar_shim::app::run`], [`sidecar_shim::wait::run`] or
//! [`sidecar_shim::agent::run`].

use std::process::ExitCode;

use clap::Parser;
use sidecar_shim::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    sidecar_shim::logging::init();
    let threads = match &cli.command {
        Command::Run(args) => args.threads,
        Command::Gateway(args) => args.threads,
        _ => None,
    };
    // One thread: the current-thread scheduler, which skips the work
    // stealing and cross-thread wakeups a one-worker pool still pays for.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|n| *n > 1) {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh-shim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime
            .block_on(sidecar_shim::app::run(*args))
            .map_err(|e| e.to_string()),
        Command::Gateway(args) => runtime
            .block_on(sidecar_shim::gateway::run(*args))
            .map_err(|e| e.to_string()),
        Command::Wait(args) => runtime.block_on(sidecar_shim::wait::run(args)),
        Command::Iptables(args) => sidecar_shim::iptables::run(&args),
        Command::Agent(args) => runtime
            .block_on(sidecar_shim::agent::run(*args))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-shim: {e}");
            ExitCode::FAILURE
        }
    }
}
