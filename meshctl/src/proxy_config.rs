//! `meshctl proxy-config NODE`: the config meshd holds for one connected
//! client, asked over CSDS (`ClientStatusDiscoveryService/FetchClientStatus`
//! on meshd's xDS port), with each resource's version and status, and, in
//! JSON, what the resource means in the mesh's own model (decoded with the
//! same code the SDK uses).

use std::process::ExitCode;
use std::time::Duration;

use mesh_xds::decode::{
    decode_cluster, decode_endpoints, decode_listener, decode_route_configuration,
};
use mesh_xds::pb::envoy::admin::v3::ClientResourceStatus;
use mesh_xds::pb::envoy::config::cluster::v3::Cluster;
use mesh_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_xds::pb::envoy::config::listener::v3::Listener;
use mesh_xds::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_xds::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, NodeMatcher, StringMatcher,
};
use mesh_xds::pb::envoy::service::status::v3::{
    client_config::GenericXdsConfig,
    client_status_discovery_service_client::ClientStatusDiscoveryServiceClient,
    ClientStatusRequest, ConfigStatus,
};
use mesh_xds::pb::google::protobuf::Any;
use mesh_xds::telemetry_policy::{decode_telemetry_listener, is_telemetry_listener};
use mesh_xds::types::{self, unany};
use serde_json::{json, Value};

use crate::common::{print_json, CliError};

/// Arguments of `meshctl proxy-config`.
#[derive(clap::Args)]
pub struct Args {
    /// The node id (as `meshctl proxy-status` lists it).
    node: String,
    /// meshd's xDS address, host:port.
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_addr: String,
    /// Output: `short` (one line per resource) or `json` (everything).
    #[arg(short, long, default_value = "short", value_parser = ["short", "json"])]
    output: String,
}

fn short_type(type_url: &str) -> &str {
    match type_url {
        types::CLUSTER => "cluster",
        types::LISTENER => "listener",
        types::ROUTE => "route",
        types::ENDPOINT => "endpoint",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

/// What a resource means, in the mesh's model (or why it could not be read).
fn meaning(type_url: &str, a: &Any) -> Value {
    let decoded = match type_url {
        types::LISTENER => unany::<Listener>(a).map(|l| match decode_listener(&l) {
            Ok(c) => json!({"routeConfigName": c.route_config_name, "faultFilter": c.fault_filter}),
            // The SDK's telemetry policy, as meshd sends it.
            Err(_) if is_telemetry_listener(&l) => match decode_telemetry_listener(&l) {
                Ok(p) => json!({"telemetry": p}),
                Err(e) => json!({"error": e.to_string()}),
            },
            // Server-side (inbound) listeners have filter chains, no api_listener.
            Err(_) => json!({"inbound": true, "filterChains": l.filter_chains.len()}),
        }),
        types::ROUTE => {
            unany::<RouteConfiguration>(a).map(|r| match decode_route_configuration(&r) {
                Ok((host, port, protocol, external, table)) => json!({
                    "host": host, "port": port, "protocol": protocol.to_string(),
                    "meshExternal": external, "routes": table,
                }),
                Err(e) => json!({"error": e.to_string()}),
            })
        }
        types::CLUSTER => unany::<Cluster>(a).map(|c| match decode_cluster(&c, None) {
            Ok(c) => serde_json::to_value(c).unwrap_or(Value::Null),
            Err(e) => json!({"error": e.to_string()}),
        }),
        types::ENDPOINT => unany::<ClusterLoadAssignment>(a)
            .map(|c| serde_json::to_value(decode_endpoints(&c)).unwrap_or(Value::Null)),
        _ => None,
    };
    decoded.unwrap_or_else(|| json!({"undecoded": a.type_url, "bytes": a.value.len()}))
}

fn status_names(g: &GenericXdsConfig) -> (&'static str, &'static str) {
    (
        ConfigStatus::try_from(g.config_status).map_or("UNKNOWN", |s| s.as_str_name()),
        ClientResourceStatus::try_from(g.client_status).map_or("UNKNOWN", |s| s.as_str_name()),
    )
}

fn resource_json(g: &GenericXdsConfig) -> Value {
    let (config_status, client_status) = status_names(g);
    json!({
        "type": short_type(&g.type_url),
        "name": g.name,
        "version": g.version_info,
        "configStatus": config_status,
        "clientStatus": client_status,
        "error": g.error_state.as_ref().map(|e| json!({"version": e.version_info, "details": e.details})),
        "lastUpdated": g.last_updated.as_ref().map(|t| t.seconds),
        "config": g.xds_config.as_ref().map(|a| meaning(&g.type_url, a)),
    })
}

async fn fetch(args: &Args) -> Result<Vec<GenericXdsConfig>, CliError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.xds_addr))
        .map_err(|e| format!("--xds-addr {}: {e}; expected HOST:PORT", args.xds_addr))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot reach meshd's xDS port at {}: {e}; is meshd running and is --xds-addr its xDS address?",
            args.xds_addr
        )
    })?;
    let req = ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(args.node.clone())),
                ignore_case: false,
            }),
            node_metadatas: vec![],
        }],
        ..Default::default()
    };
    let resp = ClientStatusDiscoveryServiceClient::new(channel)
        .fetch_client_status(req)
        .await
        .map_err(|s| {
            format!(
                "CSDS FetchClientStatus at {}: {}",
                args.xds_addr,
                s.message()
            )
        })?
        .into_inner();
    let Some(config) = resp.config.into_iter().next() else {
        return Err(format!(
            "node {:?} is not connected to meshd at {}; `meshctl proxy-status` lists the connected nodes",
            args.node, args.xds_addr
        ));
    };
    Ok(config.generic_xds_configs)
}

/// Renders resources one per line.
fn short(resources: &[GenericXdsConfig]) -> String {
    let mut grid = vec![vec![
        "TYPE".to_string(),
        "NAME".to_string(),
        "VERSION".to_string(),
        "STATUS".to_string(),
    ]];
    for g in resources {
        let (config_status, client_status) = status_names(g);
        let mut status = format!("{config_status}/{client_status}");
        if let Some(e) = &g.error_state {
            status.push_str(&format!(" ({})", e.details));
        }
        grid.push(vec![
            short_type(&g.type_url).to_string(),
            g.name.clone(),
            g.version_info.clone(),
            status,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| grid.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    grid.iter()
        .map(|l| {
            l.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the command.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let mut resources = rt.block_on(fetch(&args))?;
    let order = |t: &str| match t {
        types::LISTENER => 0,
        types::ROUTE => 1,
        types::CLUSTER => 2,
        types::ENDPOINT => 3,
        _ => 4,
    };
    resources.sort_by(|a, b| (order(&a.type_url), &a.name).cmp(&(order(&b.type_url), &b.name)));
    if args.output == "json" {
        print_json(&json!({
            "node": args.node,
            "resources": resources.iter().map(resource_json).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("{}", short(&resources));
    }
    Ok(ExitCode::SUCCESS)
}
