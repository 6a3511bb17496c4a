//! `meshctl bootstrap grpc`: the xDS bootstrap JSON that points a stock
//! proxyless gRPC client (grpc-go, grpc-java, Python grpcio, Node
//! grpc-js-xds) at `meshd`, in the shape istiod's agent writes it.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_core::authz::StockServer;
use mesh_xds::bootstrap::{ChannelCreds, GrpcBootstrap};
use mesh_xds::node::NodeInfo;
use serde_json::Value;

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
    /// Node id; defaults to Istio's form sidecar~IP~NAME.NS~NS.svc.cluster.local
    /// (mesh_xds::node::default_node_id).
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

/// What the workload says about itself: the node metadata is written by
/// mesh-xds's one writer ([`mesh_xds::node`]), the one the SDK's xDS
/// client sends and meshd reads back, as a stock client (no `MESH_SDK`).
fn node_info(args: &Args) -> Result<NodeInfo, CliError> {
    Ok(NodeInfo {
        id: args.node_id.clone().unwrap_or_default(),
        namespace: Some(args.namespace.clone()),
        labels: parse_labels(&args.labels)?,
        service_account: Some(args.service_account.clone()),
        cluster_id: Some(args.cluster_id.clone()),
        mesh_id: Some(args.mesh_id.clone()),
        workload_name: Some(args.workload_name.clone()),
        instance_ips: vec![args.ip.clone()],
        proxyless_grpc: true,
        mesh_sdk: false,
        stock_server: StockServer::default(),
    })
}

/// Builds the bootstrap document (with [`mesh_xds::bootstrap`], the
/// builder `mesh-shim agent` also writes its file with).
pub fn bootstrap(args: &Args) -> Result<Value, CliError> {
    Ok(GrpcBootstrap {
        server_uri: args.xds_addr.clone(),
        channel: ChannelCreds::Insecure,
        node: node_info(args)?,
        cert_dir: args.cert_dir.clone(),
    }
    .to_json())
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
    use mesh_xds::node::to_node;
    use serde_json::json;

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

    #[test]
    fn the_bootstrap_node_reads_back_as_the_flags_say() {
        let flags = [
            "--namespace",
            "shop",
            "--labels",
            "app=cart,version=v2",
            "--service-account",
            "cart-sa",
            "--workload-name",
            "cart-7d9",
            "--ip",
            "10.1.2.3",
            "--cluster-id",
            "east",
            "--mesh-id",
            "mesh1",
        ];
        let doc = bootstrap_from_flags(flags).unwrap();
        let node = mesh_xds::node::node_from_json(&doc["node"]);
        let info = NodeInfo::from_node(&node);
        assert_eq!(
            info,
            NodeInfo {
                id: "sidecar~10.1.2.3~cart-7d9.shop~shop.svc.cluster.local".into(),
                namespace: Some("shop".into()),
                labels: [("app", "cart"), ("version", "v2")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                service_account: Some("cart-sa".into()),
                cluster_id: Some("east".into()),
                mesh_id: Some("mesh1".into()),
                workload_name: Some("cart-7d9".into()),
                instance_ips: vec!["10.1.2.3".into()],
                proxyless_grpc: true,
                mesh_sdk: false,
                stock_server: StockServer::default(),
            }
        );
        // What the SDK's client sends for the same workload differs only
        // in saying it is ours (and its user agent).
        let mut sdk = to_node(&NodeInfo {
            proxyless_grpc: false,
            ..info.clone()
        });
        assert_eq!(
            sdk.metadata
                .as_mut()
                .unwrap()
                .fields
                .remove(mesh_xds::node::MESH_SDK),
            Some(mesh_xds::types::json_to_value(&json!("true")))
        );
        assert_eq!(sdk.metadata, node.metadata);
        assert_eq!(sdk.id, node.id);
        let explicit = bootstrap_from_flags(["--namespace", "shop", "--node-id", "n1"]).unwrap();
        assert_eq!(explicit["node"]["id"], "n1");
    }
}
