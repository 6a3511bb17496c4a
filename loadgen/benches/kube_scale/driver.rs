//! One scale run, end to end: a real kube-apiserver and etcd
//! (`mesh_test_support::kube`, watch cache on) populated with a
//! [`Layout`]'s Services, EndpointSlices, Pods (with status) and Istio
//! objects by kube-rs with bounded concurrency; meshd started as a child
//! process with `--source kubernetes`; a fleet of simulated proxyless gRPC
//! clients subscribed to the Kubernetes Services; then EndpointSlice
//! changes timed until every client that targets the changed Service has
//! ACKed the new endpoints. Optionally the same objects as files for
//! `meshd --config DIR`, measured the same way, as the baseline.
//!
//! Shared by the bench (`main.rs`) and its smoke test
//! (`loadgen/tests/kube_scale.rs`, which includes this file), so it
//! prints progress to stderr and returns a [`Report`]; figures are
//! reported, never judged.
//!
//! Not here: flags (main.rs), the objects themselves
//! ([`mesh_loadgen::kube`]), the clients ([`mesh_loadgen::fleet`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::Client;
use mesh_loadgen::fleet::{Change, Fleet, FleetSpec, Naming, Progress};
use mesh_loadgen::kube::{Layout, SYSTEM_NAMESPACE};
use mesh_loadgen::run::{time_change, EditResult, Timing};
use mesh_loadgen::server::{self, Kind, Server, Source};
use mesh_loadgen::LoadError;
use mesh_test_support::kube::{istio_crds, KubeCluster, KubeClusterOptions, ADMIN};
use serde_json::{json, Value};
use tokio::time::Instant;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster's contents.
    pub layout: Layout,
    /// Simulated SotW clients.
    pub clients: usize,
    /// Services each client targets.
    pub targets: usize,
    /// HTTP/2 connections the clients share.
    pub connections: usize,
    /// EndpointSlice changes to time (each on a different Service).
    pub changes: usize,
    /// Creates in flight while populating.
    pub concurrency: usize,
    /// Also measure meshd on the same objects as files.
    pub files_baseline: bool,
    /// The meshd binary.
    pub meshd: PathBuf,
    /// Extra environment for meshd (e.g. `MESHD_LOG=debug`).
    pub meshd_env: Vec<(String, String)>,
    /// Bound on meshd's start, on configuring the fleet and on each change.
    pub timeout: Duration,
    /// Quiet time before each RSS reading and after each change.
    pub settle: Duration,
    /// Copy meshd's logs into this directory (they are removed otherwise).
    pub keep_logs: Option<PathBuf>,
}

/// One meshd run (on the API server, or on files).
#[derive(Debug, Clone)]
pub struct SourceResult {
    /// `kubernetes` or `files`.
    pub source: &'static str,
    /// From starting the process until `/ready` answered 200 (every kind
    /// listed, the first config compiled) and xDS accepted a connection.
    pub ready: Duration,
    /// CPU seconds meshd spent until then plus the settle time.
    pub startup_cpu_s: Option<f64>,
    /// RSS after the settle time, before any client, KiB.
    pub rss_synced_kib: Option<u64>,
    /// How many clients got configured in time.
    pub initial: Progress,
    /// From the first stream until every client was configured.
    pub initial_time: Duration,
    /// meshd CPU seconds for configuring the fleet.
    pub initial_cpu_s: Option<f64>,
    /// RSS with the fleet connected and configured, after the settle
    /// time, KiB.
    pub rss_clients_kib: Option<u64>,
    /// Peak RSS (VmHWM) at the end, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resources (LDS, RDS, CDS, EDS) the configured clients hold, summed.
    pub resources: [usize; 4],
    /// Each change: the Service changed and its timing.
    pub changes: Vec<(usize, EditResult)>,
}

impl SourceResult {
    /// Every client configured and every change ACKed by every affected
    /// client.
    pub fn complete(&self) -> bool {
        self.initial.complete()
            && !self.changes.is_empty()
            && self.changes.iter().all(|(_, c)| c.progress.complete())
    }

    fn change_ms(&self) -> Vec<f64> {
        sorted(
            self.changes
                .iter()
                .map(|(_, c)| c.time.as_secs_f64() * 1000.0),
        )
    }

    fn change_cpu_ms(&self, settled: bool) -> Vec<f64> {
        sorted(self.changes.iter().filter_map(|(_, c)| {
            if settled { c.cpu_settled_s } else { c.cpu_s }.map(|s| s * 1000.0)
        }))
    }

    /// The median change time, ms.
    pub fn change_median_ms(&self) -> Option<f64> {
        median(&self.change_ms())
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// What ran.
    pub options: Options,
    /// Objects created in the API server (Namespaces, Services,
    /// EndpointSlices, Pods, DestinationRules, VirtualServices).
    pub objects: usize,
    /// Creating them (with the Pods' status writes).
    pub populate: Duration,
    /// meshd on the API server.
    pub kube: SourceResult,
    /// meshd on the same objects as files, when asked for.
    pub files: Option<SourceResult>,
}

fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: &[f64]) -> Option<f64> {
    v.get(v.len() / 2).copied()
}

/// Runs `options`: populate, measure meshd on Kubernetes, then (when
/// asked) on files.
pub async fn run(options: Options) -> Result<Report, String> {
    let layout = options.layout;
    let cluster = KubeCluster::start_with(KubeClusterOptions::default()).await;
    cluster.apply_yaml(&istio_crds()).await;
    let started = Instant::now();
    let objects = populate(&cluster, &layout, options.concurrency).await?;
    let populate = started.elapsed();
    eprintln!(
        "kube-scale: {objects} objects created in {:.1}s ({:.0}/s)",
        populate.as_secs_f64(),
        objects as f64 / populate.as_secs_f64().max(1e-3)
    );
    let kubeconfig = cluster.kubeconfig(ADMIN);
    let client = cluster.client();
    let kube = measure(
        &options,
        Source::Kubernetes {
            kubeconfig: &kubeconfig,
        },
        |i| {
            let client = client.clone();
            async move { patch_slice(&client, &layout, i).await }
        },
    )
    .await?;
    // The API server and etcd are done: stop them before the baseline, so
    // they take no CPU from it.
    drop(cluster);
    let files = if options.files_baseline {
        let dir = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
        layout.write_files(dir.path()).map_err(|e| e.to_string())?;
        let path = dir.path().to_path_buf();
        Some(
            measure(&options, Source::Files(dir.path()), |i| {
                let path = path.clone();
                async move {
                    layout
                        .write_service_file(&path, i, Some(0))
                        .map_err(|e| e.to_string())
                }
            })
            .await?,
        )
    } else {
        None
    };
    Ok(Report {
        options,
        objects,
        populate,
        kube,
        files,
    })
}

/// One create (or status write) to the API server.
#[derive(Debug, Clone, Copy)]
enum Op {
    Service(usize),
    Slice(usize, usize),
    Pod(usize),
}

/// Creates the namespaces, then every Service, EndpointSlice and Pod
/// (create, then status) with `concurrency` requests in flight, then the
/// Istio objects; returns how many objects there are.
async fn populate(
    cluster: &KubeCluster,
    layout: &Layout,
    concurrency: usize,
) -> Result<usize, String> {
    cluster.create_namespace(SYSTEM_NAMESPACE).await;
    let namespaces = layout.namespace_names();
    for ns in &namespaces {
        cluster.create_namespace(ns).await;
    }
    let ops: Vec<Op> = (0..layout.services)
        .map(Op::Service)
        .chain(
            (0..layout.services)
                .flat_map(|i| (0..layout.slices_per_service).map(move |s| Op::Slice(i, s))),
        )
        .chain((0..layout.pods).map(Op::Pod))
        .collect();
    let total = ops.len();
    let client = cluster.client();
    let ars = Resources::new();
    let started = Instant::now();
    let mut done = 0usize;
    let mut next_note = total / 10;
    let mut results = futures_util::stream::iter(ops)
        .map(|op| create(&client, &ars, layout, op))
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        r?;
        done += 1;
        if done >= next_note && done < total {
            eprintln!(
                "kube-scale: {done}/{total} created ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
            next_note += total / 10;
        }
    }
    drop(results);
    // The Istio objects: few, through server-side apply.
    let istio: Vec<usize> = (0..layout.services)
        .filter(|i| layout.has_istio(*i))
        .collect();
    futures_util::stream::iter(istio.iter().copied().map(Ok::<usize, String>))
        .try_for_each_concurrent(concurrency.max(1), |i| async move {
            cluster.apply_yaml(&layout.istio_yaml(i)).await;
            Ok(())
        })
        .await?;
    Ok(1 + namespaces.len() + total + 2 * istio.len())
}

/// Where the API serves each kind the bench creates.
struct Resources {
    service: ApiResource,
    slice: ApiResource,
    pod: ApiResource,
}

impl Resources {
    fn new() -> Self {
        Self {
            service: ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
            slice: ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&()),
            pod: ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        }
    }
}

/// Attempts of one request before the run fails.
const ATTEMPTS: u32 = 5;

/// Runs `f` until it succeeds, [`ATTEMPTS`] times with a growing pause;
/// a 409 (AlreadyExists) after a failed attempt counts as done (the
/// earlier attempt got in).
async fn retry<F, Fut>(what: impl Fn() -> String, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if attempt > 0 && s.code == 409 => return Ok(()),
            Err(e) if attempt + 1 < ATTEMPTS => {
                attempt += 1;
                eprintln!("kube-scale: {} failed ({e}); again", what());
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => return Err(format!("{}: {e} (after {ATTEMPTS} attempts)", what())),
        }
    }
}

fn dynamic(v: Value) -> Result<DynamicObject, String> {
    serde_json::from_value(v).map_err(|e| format!("building an object: {e}"))
}

async fn create(client: &Client, ars: &Resources, layout: &Layout, op: Op) -> Result<(), String> {
    let (ar, ns, object) = match op {
        Op::Service(i) => (&ars.service, layout.namespace(i), layout.service_object(i)),
        Op::Slice(i, s) => (
            &ars.slice,
            layout.namespace(i),
            layout.slice_object(i, s, None),
        ),
        Op::Pod(k) => (&ars.pod, layout.pod(k).0, layout.pod_object(k)),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, ar);
    let object = dynamic(object)?;
    let name = object.metadata.name.clone().unwrap_or_default();
    let (api, object_ref) = (&api, &object);
    let what = || format!("creating {} {ns}/{name}", ar.kind);
    retry(what, move || async move {
        api.create(&PostParams::default(), object_ref)
            .await
            .map(drop)
    })
    .await?;
    if let Op::Pod(k) = op {
        let status = &layout.pod_status(k);
        let name = &name;
        let what = || format!("writing the status of Pod {ns}/{name}");
        retry(what, move || async move {
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .map(drop)
        })
        .await?;
    }
    Ok(())
}

/// The change: endpoint 0 of Service `i`'s first slice becomes not ready
/// (a merge patch of the slice's endpoints, as the controller would
/// write it when the Pod's readiness probe fails).
async fn patch_slice(client: &Client, layout: &Layout, i: usize) -> Result<(), String> {
    let ar = ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &layout.namespace(i), &ar);
    let name = layout.slice_name(i, 0);
    let patch = json!({"endpoints": layout.slice_object(i, 0, Some(0))["endpoints"]});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| format!("patching EndpointSlice {name}: {e}"))
}

/// The Services to change: `n` of them spread over the layout, each with
/// at least one client targeting it.
fn changed_services(fleet: &Fleet, services: usize, n: usize) -> Vec<(usize, Vec<bool>)> {
    let mut out: Vec<(usize, Vec<bool>)> = Vec::new();
    for j in 0..n {
        let from = j * services / n.max(1);
        let found = (0..services).map(|d| (from + d) % services).find_map(|i| {
            if out.iter().any(|(o, _)| *o == i) {
                return None;
            }
            let affected = fleet.affected_by(i);
            affected.iter().any(|a| *a).then_some((i, affected))
        });
        out.extend(found);
    }
    out
}

fn sample(pid: u32) -> Option<server::Sample> {
    server::sample(pid).ok()
}

/// Starts meshd on `source`, lets it settle, connects the fleet, and
/// times the changes `apply(i)` makes to Service `i`.
async fn measure<F, Fut>(
    options: &Options,
    source: Source<'_>,
    apply: F,
) -> Result<SourceResult, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let name = match source {
        Source::Files(_) => "files",
        Source::Kubernetes { .. } => "kubernetes",
    };
    eprintln!("kube-scale: starting meshd on {name} ...");
    let server = Server::start_from(
        Kind::Meshd,
        &options.meshd,
        source,
        &options.meshd_env,
        options.timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let result = measure_started(options, name, &server, apply).await;
    if let Some(dir) = &options.keep_logs {
        let to = dir.join(format!("meshd-{name}.log"));
        match std::fs::create_dir_all(dir).and_then(|()| std::fs::copy(server.log_path(), &to)) {
            Ok(_) => eprintln!("kube-scale: meshd's log kept in {}", to.display()),
            Err(e) => eprintln!("kube-scale: keeping meshd's log in {}: {e}", to.display()),
        }
    }
    server.stop().await;
    result
}

async fn measure_started<F, Fut>(
    options: &Options,
    name: &'static str,
    server: &Server,
    apply: F,
) -> Result<SourceResult, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let pid = server.pid();
    let ready = server.ready_after();
    eprintln!(
        "kube-scale: meshd ({name}) ready after {:.2}s",
        ready.as_secs_f64()
    );
    tokio::time::sleep(options.settle).await;
    let synced = sample(pid);
    let spec = FleetSpec {
        clients: options.clients,
        services: options.layout.services,
        targets: options.targets,
        connections: options.connections,
        delta: false,
        apps: options.clients.clamp(1, 10),
        serving: false,
        naming: Naming::Kube(options.layout),
    };
    let mut fleet = Fleet::start(server.xds_addr(), spec)
        .await
        .map_err(|e| e.to_string())?;
    let initial = fleet.wait_configured(fleet.started + options.timeout).await;
    let configured = sample(pid);
    let initial_time = initial.at.saturating_duration_since(fleet.started);
    eprintln!(
        "kube-scale: {}/{} clients configured in {:.2}s",
        initial.done,
        initial.of,
        initial_time.as_secs_f64()
    );
    fleet.idle(options.settle).await;
    let with_clients = sample(pid);
    let mut result = SourceResult {
        source: name,
        ready,
        startup_cpu_s: synced.map(|s| s.cpu_s),
        rss_synced_kib: synced.map(|s| s.rss_kib),
        initial_cpu_s: match (synced, configured) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        },
        rss_clients_kib: with_clients.map(|s| s.rss_kib),
        peak_rss_kib: None,
        resources: fleet.resources(),
        initial_time,
        initial,
        changes: Vec::new(),
    };
    if result.initial.complete() {
        let timing = Timing {
            pid: Some(pid),
            timeout: options.timeout,
            settle: options.settle,
        };
        for (i, affected) in changed_services(&fleet, options.layout.services, options.changes) {
            let write = apply(i);
            let write = async { write.await.map_err(LoadError::Change) };
            let change = time_change(&mut fleet, Change::Endpoints, affected, write, timing)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "kube-scale: {name}: slice of svc-{i} changed -> {}/{} affected clients ACKed in {:.1} ms ({} clients saw an endpoint change)",
                change.progress.done,
                change.progress.of,
                change.time.as_secs_f64() * 1000.0,
                change.changed
            );
            result.changes.push((i, change));
        }
    }
    result.peak_rss_kib = sample(pid).map(|s| s.hwm_kib);
    fleet.stop().await;
    Ok(result)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn triple(v: &[f64]) -> String {
    match (v.first(), median(v), v.last()) {
        (Some(a), Some(m), Some(b)) => format!("{a:.1} / {m:.1} / {b:.1}"),
        _ => "-".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

impl Report {
    /// The table: one row per source, then kube/files ratios.
    pub fn table(&self) -> String {
        let o = &self.options;
        let l = &o.layout;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "kube-scale: {} Services, {} EndpointSlices ({} endpoints), {} Pods, {} DestinationRules + {} VirtualServices in {} namespaces = {} objects; populated in {:.1}s",
            l.services,
            l.slices(),
            l.endpoints(),
            l.pods,
            l.istio_services(),
            l.istio_services(),
            l.namespaces,
            self.objects,
            self.populate.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "{} SotW clients x {} Services each over {} connections; {} EndpointSlice changes",
            o.clients, o.targets, o.connections, o.changes
        );
        let _ = writeln!(
            s,
            "| source | ready s | RSS synced MiB | clients configured | configure s | RSS w/ clients MiB | peak MiB | change -> all affected ACKed ms (min / median / max) | meshd CPU ms per change (to ACK / settled, median) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for r in std::iter::once(&self.kube).chain(self.files.as_ref()) {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {}/{} | {:.2} | {} | {} | {} | {} / {} |",
                r.source,
                r.ready.as_secs_f64(),
                mib(r.rss_synced_kib),
                r.initial.done,
                r.initial.of,
                r.initial_time.as_secs_f64(),
                mib(r.rss_clients_kib),
                mib(r.peak_rss_kib),
                triple(&r.change_ms()),
                opt(median(&r.change_cpu_ms(false)), 1),
                opt(median(&r.change_cpu_ms(true)), 1),
            );
        }
        if let Some(f) = &self.files {
            let k = &self.kube;
            let f64_of = |v: Option<u64>| v.map(|v| v as f64);
            let _ = writeln!(
                s,
                "kubernetes / files: ready {}  RSS synced {}  RSS with clients {}  change median {}  CPU per change {}",
                ratio(Some(k.ready.as_secs_f64()), Some(f.ready.as_secs_f64())),
                ratio(f64_of(k.rss_synced_kib), f64_of(f.rss_synced_kib)),
                ratio(f64_of(k.rss_clients_kib), f64_of(f.rss_clients_kib)),
                ratio(k.change_median_ms(), f.change_median_ms()),
                ratio(median(&k.change_cpu_ms(false)), median(&f.change_cpu_ms(false))),
            );
        }
        for r in std::iter::once(&self.kube).chain(self.files.as_ref()) {
            let [lds, rds, cds, eds] = r.resources;
            let _ = writeln!(
                s,
                "  {}: clients hold {lds} listeners, {rds} route configs, {cds} clusters, {eds} endpoint sets; {} streams ended{}",
                r.source,
                r.initial.ended,
                r.initial
                    .first_end
                    .as_deref()
                    .map_or(String::new(), |w| format!(" (first: {w})"))
            );
            for (i, c) in &r.changes {
                let _ = writeln!(
                    s,
                    "  {}: svc-{i}: {}/{} affected clients ACKed in {:.1} ms, {} clients saw an endpoint change, CPU {} ms to ACK, {} ms settled",
                    r.source,
                    c.progress.done,
                    c.progress.of,
                    c.time.as_secs_f64() * 1000.0,
                    c.changed,
                    opt(c.cpu_s.map(|v| v * 1000.0), 1),
                    opt(c.cpu_settled_s.map(|v| v * 1000.0), 1),
                );
            }
        }
        s
    }

    /// One JSON object with the figures (times in s or ms, sizes in MiB,
    /// rounded to 3 decimals).
    pub fn json(&self) -> Value {
        let o = &self.options;
        let l = &o.layout;
        let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
        let all = |v: Vec<f64>| v.into_iter().map(r3).collect::<Vec<_>>();
        let mib = |k: Option<u64>| k.map(|k| r3(k as f64 / 1024.0));
        let source = |r: &SourceResult| {
            json!({
                "ready_s": r3(r.ready.as_secs_f64()),
                "startup_cpu_s": r.startup_cpu_s.map(r3),
                "rss_synced_mib": mib(r.rss_synced_kib),
                "clients_configured": r.initial.done,
                "configure_s": r3(r.initial_time.as_secs_f64()),
                "configure_cpu_s": r.initial_cpu_s.map(r3),
                "rss_clients_mib": mib(r.rss_clients_kib),
                "peak_rss_mib": mib(r.peak_rss_kib),
                "change_ms": all(r.change_ms()),
                "change_affected": r.changes.iter().map(|(_, c)| c.progress.of).collect::<Vec<_>>(),
                "change_acked": r.changes.iter().map(|(_, c)| c.progress.done).collect::<Vec<_>>(),
                "change_cpu_ms": all(r.change_cpu_ms(false)),
                "change_cpu_settled_ms": all(r.change_cpu_ms(true)),
                "complete": r.complete(),
            })
        };
        json!({
            "bench": "kube_scale",
            "services": l.services,
            "endpoint_slices": l.slices(),
            "endpoints": l.endpoints(),
            "pods": l.pods,
            "istio_objects": 2 * l.istio_services(),
            "namespaces": l.namespaces,
            "objects": self.objects,
            "clients": o.clients,
            "targets": o.targets,
            "populate_s": r3(self.populate.as_secs_f64()),
            "kubernetes": source(&self.kube),
            "files": self.files.as_ref().map(source),
        })
    }
}

/// The meshd binary beside the running executable's profile directory
/// (`target/<profile>/meshd` for `target/<profile>/deps/<bench>`), or the
/// reason there is none, with the command that builds it.
pub fn meshd_beside_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} has no profile directory", exe.display()))?;
    let meshd = profile_dir.join("meshd");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if meshd.is_file() {
        Ok(meshd)
    } else {
        Err(format!(
            "no meshd at {}: build it with `cargo build{} -p mesh-control --bin meshd` (or pass --meshd PATH)",
            meshd.display(),
            if release { " --release" } else { "" }
        ))
    }
}
