//! `meshctl`: the operator CLI, istioctl's counterpart.
//!
//! `analyze` reports the configurations behind most Istio outages;
//! `x route` and `x authz` explain, with the very engines the SDK runs,
//! where a request would be routed and whether it would be allowed;
//! `proxy-status` and `proxy-config` show what meshd's clients run;
//! `install` prints the manifests that run meshd on Kubernetes.
#![forbid(unsafe_code)]

mod analyze;
mod proxy_config;
mod proxy_status;
mod x_authz;
mod x_route;

use std::process::ExitCode;

use meshctl::{bootstrap, common, install};

use clap::{Parser, Subcommand};

/// Operator CLI for the in-process service mesh.
#[derive(Parser)]
#[command(name = "meshctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze Istio configuration for mistakes (exit 0: no errors, 1: errors, 2: could not run).
    Analyze(analyze::Args),
    /// Generate bootstrap files for workloads.
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
    /// Kubernetes manifests for meshd: the Istio CRDs, RBAC, Deployment and Service (kubectl apply -f -).
    Install(install::Args),
    /// Every client connected to meshd and whether it runs the latest config, per xDS type.
    ProxyStatus(proxy_status::Args),
    /// One client's config as meshd holds it (over CSDS).
    ProxyConfig(proxy_config::Args),
    /// Experimental request simulators.
    #[command(subcommand)]
    X(XCommand),
}

#[derive(Subcommand)]
enum BootstrapCommand {
    /// The xDS bootstrap JSON for a proxyless gRPC client or server (GRPC_XDS_BOOTSTRAP).
    Grpc(Box<bootstrap::Args>),
}

// Boxed: the simulators take many flags, and clap builds this enum once.
#[derive(Subcommand)]
enum XCommand {
    /// Explain where a request would be routed.
    Route(Box<x_route::Args>),
    /// Explain whether a request would be allowed by authorization policies.
    Authz(Box<x_authz::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Bootstrap(BootstrapCommand::Grpc(args)) => bootstrap::run(*args),
        Command::Install(args) => install::run(args),
        Command::ProxyStatus(args) => proxy_status::run(args),
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::X(XCommand::Route(args)) => x_route::run(*args),
        Command::X(XCommand::Authz(args)) => x_authz::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::from(2)
        }
    }
}
