//! meshd at scale: N simulated ADS clients (each a real SotW stream over
//! loopback gRPC, subscribing and ACKing like a proxyless gRPC client) and
//! M generated services. Measures the time until every client has ACKed
//! its full config, the process's resident memory, and the time from a
//! file change to every client ACKing the new version; then prints the
//! figures next to the istiod anchor.
//!
//! Run: `cargo bench -p mesh-benches --bench meshd_scale`
//! Sizes: `MESHD_BENCH_CLIENTS` (default 200, at most 2000),
//! `MESHD_BENCH_SERVICES` (default 100, at most 1000),
//! `MESHD_BENCH_IDENTITIES` (distinct client identities, default
//! min(clients, services): each client is a replica of one service).
//! The whole run is bounded by `MESHD_BENCH_TIMEOUT_S` (default 300).
//!
//! meshd and the clients share this process: the memory figure includes
//! the clients' side, and the clients' protobuf decoding competes with
//! meshd for the same cores, so the figures are upper bounds for meshd.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_control::{Meshd, MeshdConfig};
use mesh_xds::pb::envoy::config::cluster::v3::Cluster;
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::envoy::config::listener::v3::Listener;
use mesh_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use mesh_xds::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
};
use mesh_xds::pb::google::protobuf::{value::Kind, Struct, Value};
use mesh_xds::types::{self, unany};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Streams per HTTP/2 connection, as a sidecar fleet would not share one.
const STREAMS_PER_CHANNEL: usize = 50;

fn env_usize(name: &str, default: usize, max: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds this process has used (user + system), from
/// /proc/self/stat; on a shared machine it says more than wall time.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn vs(i: usize, timeout_s: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - timeout: {timeout_s}s\n    retries: {{attempts: 2, perTryTimeout: 1s}}\n    route:\n    - destination: {{host: svc-{i}}}\n"
    )
}

/// One Service, two WorkloadEntries per service; a VirtualService for
/// every tenth, each in its own file.
fn write_config(dir: &std::path::Path, services: usize) -> Result<(), Error> {
    let mut all = String::new();
    for i in 0..services {
        all.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports:\n  - {{name: http, port: 8080}}\n"
        ));
        for r in 0..2 {
            all.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc-{i}-{r}, namespace: bench}}\nspec:\n  address: 10.{}.{}.{}\n  labels: {{app: svc-{i}}}\n",
                i / 250,
                i % 250,
                r + 1
            ));
        }
        if i % 10 == 0 {
            std::fs::write(dir.join(format!("vs-{i}.yaml")), vs(i, 5))?;
        }
    }
    std::fs::write(dir.join("services.yaml"), all)?;
    Ok(())
}

fn node(i: usize, identities: usize) -> Node {
    let s = |v: String| Value {
        kind: Some(Kind::StringValue(v)),
    };
    let mut labels = Struct::default();
    labels
        .fields
        .insert("app".into(), s(format!("svc-{}", i % identities)));
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s("bench".into()));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: format!(
            "sidecar~10.200.{}.{}~client-{i}.bench~bench.svc.cluster.local",
            i / 250,
            i % 250
        ),
        metadata: Some(md),
        ..Default::default()
    }
}

/// What a client reports after each ACK.
struct Acked {
    client: usize,
    type_url: String,
    version: String,
}

async fn client(
    channel: tonic::transport::Channel,
    i: usize,
    identities: usize,
    report: mpsc::UnboundedSender<Acked>,
) -> Result<(), Error> {
    let mut ads = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    let mut first = Some(node(i, identities));
    let req = |first: &mut Option<Node>, t: &str, names: Vec<String>, v: &str, n: &str| {
        DiscoveryRequest {
            node: first.take(),
            type_url: t.into(),
            resource_names: names,
            version_info: v.into(),
            response_nonce: n.into(),
            ..Default::default()
        }
    };
    tx.send(req(&mut first, types::CLUSTER, vec![], "", ""))
        .await?;
    tx.send(req(&mut first, types::LISTENER, vec![], "", ""))
        .await?;
    let mut rx = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut subs: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(r) = rx.message().await? {
        let names = subs.get(&r.type_url).cloned().unwrap_or_default();
        tx.send(req(
            &mut first,
            &r.type_url,
            names,
            &r.version_info,
            &r.nonce,
        ))
        .await?;
        let _ = report.send(Acked {
            client: i,
            type_url: r.type_url.clone(),
            version: r.version_info.clone(),
        });
        // Follow references as a gRPC client does: CDS -> EDS, LDS -> RDS.
        let (next, wanted): (&str, BTreeSet<String>) = match r.type_url.as_str() {
            types::CLUSTER => (
                types::ENDPOINT,
                r.resources
                    .iter()
                    .filter_map(unany::<Cluster>)
                    .filter(|c| c.eds_cluster_config.is_some())
                    .map(|c| c.name)
                    .collect(),
            ),
            types::LISTENER => (
                types::ROUTE,
                r.resources
                    .iter()
                    .filter_map(unany::<Listener>)
                    .filter_map(|l| {
                        let hcm: HttpConnectionManager =
                            unany(l.api_listener?.api_listener.as_ref()?)?;
                        match hcm.route_specifier? {
                            RouteSpecifier::Rds(rds) => Some(rds.route_config_name),
                            _ => None,
                        }
                    })
                    .collect(),
            ),
            _ => continue,
        };
        let wanted: Vec<String> = wanted.into_iter().collect();
        if subs.get(next) != Some(&wanted) {
            subs.insert(next.to_string(), wanted.clone());
            tx.send(req(&mut first, next, wanted, "", "")).await?;
        }
    }
    Ok(())
}

/// Waits until `done(state)` holds, feeding ACK reports into `state`.
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Acked>,
    state: &mut HashMap<(usize, String), String>,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&HashMap<(usize, String), String>) -> bool,
) -> Result<(), Error> {
    while !done(state) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(a)) => {
                state.insert((a.client, a.type_url), a.version);
            }
            Ok(None) => return Err(format!("clients stopped before {what}").into()),
            Err(_) => return Err(format!("timed out waiting for {what}").into()),
        }
    }
    Ok(())
}

async fn run() -> Result<(), Error> {
    let clients = env_usize("MESHD_BENCH_CLIENTS", 200, 2000);
    let services = env_usize("MESHD_BENCH_SERVICES", 100, 1000);
    let identities = env_usize("MESHD_BENCH_IDENTITIES", clients.min(services), clients);
    let timeout = Duration::from_secs(env_usize("MESHD_BENCH_TIMEOUT_S", 300, 3600) as u64);
    let deadline = Instant::now() + timeout;
    println!(
        "meshd scale: {clients} clients ({identities} distinct identities), {services} services"
    );
    let rss_start = rss_mib();

    let dir = tempfile::tempdir()?;
    write_config(dir.path(), services)?;
    let t = Instant::now();
    let mut cfg = MeshdConfig::new(dir.path());
    cfg.debounce = Duration::from_millis(100);
    cfg.poll_interval = Duration::from_millis(100);
    let meshd = Meshd::start(cfg).await?;
    println!(
        "  start (load, validate, analyze {} services):  {:>8.1} ms",
        services,
        t.elapsed().as_secs_f64() * 1e3
    );
    let rss_loaded = rss_mib();
    let addr: SocketAddr = meshd.xds_addr();

    let (report, mut reports) = mpsc::unbounded_channel();
    let t = Instant::now();
    let cpu = cpu_s();
    let mut channel = None;
    for i in 0..clients {
        if i % STREAMS_PER_CHANNEL == 0 {
            channel = Some(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?,
            );
        }
        let ch = channel.clone().ok_or("no channel")?;
        let report = report.clone();
        tokio::spawn(async move {
            if let Err(e) = client(ch, i, identities, report).await {
                eprintln!("client {i}: {e}");
            }
        });
    }
    let mut state = HashMap::new();
    let all_types = [
        types::CLUSTER,
        types::ENDPOINT,
        types::LISTENER,
        types::ROUTE,
    ];
    until(&mut reports, &mut state, deadline, "the full push", |s| {
        s.len() == clients * all_types.len()
    })
    .await?;
    let full_push = t.elapsed();
    let rss_synced = rss_mib();
    println!(
        "  full push (every client ACKed CDS, EDS, LDS, RDS): {:>8.1} ms ({:.2} CPU s, meshd + clients)",
        full_push.as_secs_f64() * 1e3,
        cpu_s() - cpu
    );

    // Change one VirtualService every client sees: a new RDS version for all.
    let before: HashMap<usize, String> = state
        .iter()
        .filter(|((_, t), _)| t == types::ROUTE)
        .map(|((c, _), v)| (*c, v.clone()))
        .collect();
    let sum_of = |m: &str, metric: &str| {
        m.lines()
            .find(|l| l.starts_with(metric))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let metrics = meshd.controller().metrics().render();
    let push_before = sum_of(&metrics, "meshd_push_time_seconds_sum");
    let compile_before = sum_of(&metrics, "meshd_compile_time_seconds_sum");
    let t = Instant::now();
    let cpu = cpu_s();
    std::fs::write(dir.path().join("vs-0.yaml"), vs(0, 7))?;
    until(
        &mut reports,
        &mut state,
        deadline,
        "every client to ACK the change",
        |s| {
            before.iter().all(|(c, v)| {
                s.get(&(*c, types::ROUTE.to_string()))
                    .is_some_and(|now| now != v)
            })
        },
    )
    .await?;
    let change = t.elapsed();
    let change_cpu = cpu_s() - cpu;
    println!(
        "  file change -> every client ACKed (incl. {} ms poll + {} ms debounce): {:>8.1} ms ({change_cpu:.2} CPU s)",
        100,
        100,
        change.as_secs_f64() * 1e3
    );
    // meshd sees the last ACKs a moment after the clients sent them.
    let convergence = meshd.controller().convergence().clone();
    for _ in 0..200 {
        if convergence.completed() > 0 && convergence.waiting() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conv = convergence
        .last()
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!("  meshd's own convergence figure (change seen -> all ACKed):  {conv:>8.1} ms");
    let metrics = meshd.controller().metrics().render();
    println!(
        "    of which meshd compiling {identities} identities and handing out snapshots: {:>8.1} ms (compiling and encoding: {:.1} ms)",
        (sum_of(&metrics, "meshd_push_time_seconds_sum") - push_before) * 1e3,
        (sum_of(&metrics, "meshd_compile_time_seconds_sum") - compile_before) * 1e3
    );
    println!(
        "  RSS: {rss_start:.0} MiB at start, {rss_loaded:.0} MiB with config loaded, {rss_synced:.0} MiB with all clients synced ({:.1} MiB per client, meshd + client side)",
        (rss_synced - rss_loaded) / clients as f64
    );
    println!(
        "  anchor: istiod 1.20 served 1000 services and 2000 sidecars with 1 vCPU and 1.5 GB; \
         here {services} services x {clients} clients took {:.2} s to full push and {:.0} MiB, on 2 shared cores",
        full_push.as_secs_f64(),
        rss_synced
    );
    meshd.shutdown().await;
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshd_scale: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("meshd_scale: {e}");
        std::process::exit(1);
    }
}
