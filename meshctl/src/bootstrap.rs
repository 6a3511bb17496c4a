//! `meshctl bootstrap grpc`: the xDS bootstrap JSON that points a stock
//! proxyless gRPC client (grpc-go, grpc-java, Python grpcio, Node
//! grpc-js-xds) at `meshd`, in the shape istiod's agent writes it.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_xds::encode::INBOUND_LISTENER_PREFIX;
use serde_json::{json, Map, Value};

use crate::common::{parse_labels, print_json, CliError};

/// Arguments of `meshctl bootstrap grpc`.
#[derive(clap::Args)]
pub struct Args {
    /// meshd's xDS address, host:port (plaintext xDS listens on 15010).
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_addr: String,
    /// Namespace of the workload.
    #[arg(long)]
    namespace: String,
    /// Labels of the workload, k=v,...
    #[arg(long, default_value = "")]
    labels: String,
    /// Service account of the workload.
    #[arg(long, default_value = "default")]
    service_account: String,
    /// Node id; defaults to Istio's form sidecar~IP~NAME.NS~NS.svc.cluster.local.
    #[arg(long)]
    node_id: Option<String>,
    /// Workload name (pod or deployment), used in the default node id.
    #[arg(long, default_value = "grpc-workload")]
    workload_name: String,
    /// Workload IP, used in the default node id and INSTANCE_IPS.
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// Directory holding cert-chain.pem, key.pem and root-cert.pem: adds a
    /// file_watcher certificate provider so xDS-configured mTLS works.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Cluster id in node metadata.
    #[arg(long, default_value = "Kubernetes")]
    cluster_id: String,
    /// Mesh id in node metadata.
    #[arg(long, default_value = "cluster.local")]
    mesh_id: String,
}

/// Builds the bootstrap document.
pub fn bootstrap(args: &Args) -> Result<Value, CliError> {
    let labels = parse_labels(&args.labels)?;
    let ns = &args.namespace;
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        format!(
            "sidecar~{}~{}.{ns}~{ns}.svc.cluster.local",
            args.ip, args.workload_name
        )
    });
    let labels_json: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut doc = json!({
        "xds_servers": [{
            "server_uri": args.xds_addr,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": node_id,
            "locality": {},
            "metadata": {
                "NAMESPACE": ns,
                "LABELS": labels_json,
                "SERVICE_ACCOUNT": args.service_account,
                "WORKLOAD_NAME": args.workload_name,
                "INSTANCE_IPS": args.ip,
                "CLUSTER_ID": args.cluster_id,
                "MESH_ID": args.mesh_id,
                "GENERATOR": "grpc",
            },
        },
        // gRFC A36: servers substitute their listening ip:port for `%s`;
        // the names match the inbound listeners mesh-xds encodes.
        "server_listener_resource_name_template": format!("{INBOUND_LISTENER_PREFIX}%s"),
    });
    if let Some(dir) = &args.cert_dir {
        let file = |name: &str| dir.join(name).display().to_string();
        doc["certificate_providers"] = json!({
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": file("cert-chain.pem"),
                    "private_key_file": file("key.pem"),
                    "ca_certificate_file": file("root-cert.pem"),
                    "refresh_interval": "900s",
                },
            },
        });
    }
    Ok(doc)
}

/// Prints the bootstrap.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    print_json(&bootstrap(&args)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `meshctl bootstrap grpc` parsed from its flags (`--namespace`, ...), as
/// a program that writes a bootstrap without running the binary calls it.
#[derive(clap::Parser)]
#[command(name = "meshctl bootstrap grpc")]
struct Flags {
    #[command(flatten)]
    args: Args,
}

/// The bootstrap `meshctl bootstrap grpc FLAGS...` prints, for the same
/// flags (without the program and subcommand names).
pub fn bootstrap_from_flags<I, S>(flags: I) -> Result<Value, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let argv = std::iter::once(std::ffi::OsString::from("meshctl-bootstrap-grpc"))
        .chain(flags.into_iter().map(Into::into));
    let f = Flags::try_parse_from(argv)
        .map_err(|e| format!("meshctl bootstrap grpc: bad flags: {e}"))?;
    bootstrap(&f.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_the_same_bootstrap_as_the_cli() {
        let doc = bootstrap_from_flags([
            "--xds-addr",
            "127.0.0.1:1234",
            "--namespace",
            "shop",
            "--labels",
            "app=cart",
        ])
        .unwrap();
        assert_eq!(doc["xds_servers"][0]["server_uri"], "127.0.0.1:1234");
        assert_eq!(doc["node"]["metadata"]["LABELS"]["app"], "cart");
        assert!(bootstrap_from_flags(["--labels", "x=y"]).is_err());
    }
}
