//! The DNS refresh on tokio's paused clock, with a resolver whose answers
//! the test scripts: when names are looked up again, what the answers
//! become, and when the refresh stops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::config::common::Labels;
use mesh_core::config::load::mesh_config_from_str;
use mesh_core::model::{Client, DnsRefresh, Model};
use mesh_core::sync::LockExt;

use super::refresh_after;
use crate::balance::{Answer, Endpoints, Resolve, ResolveFuture, DEFAULT_REFRESH, MIN_TTL};

const CLUSTER: &str = "outbound|80||api.dns.test";
const PORT: u16 = 8080;

/// Answers what the test last set for each host, and records when each
/// host was looked up.
#[derive(Default)]
struct Scripted {
    answers: Mutex<HashMap<String, Result<Answer, String>>>,
    calls: Mutex<Vec<(String, tokio::time::Instant)>>,
}

impl Scripted {
    fn new() -> Arc<Self> {
        Arc::default()
    }

    fn set(&self, host: &str, ips: &[&str]) {
        self.answer(host, ips, None);
    }

    fn answer(&self, host: &str, ips: &[&str], ttl: Option<Duration>) {
        let mut a = Answer::new(ips.iter().map(|ip| addr(ip)));
        a.ttl = ttl;
        self.answers.locked().insert(host.to_string(), Ok(a));
    }

    fn fail(&self, host: &str) {
        self.answers
            .locked()
            .insert(host.to_string(), Err(format!("SERVFAIL for {host}")));
    }

    /// When `host` was looked up, in seconds since `start`.
    fn calls(&self, host: &str, start: tokio::time::Instant) -> Vec<f64> {
        self.calls
            .locked()
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, at)| (*at - start).as_secs_f64())
            .collect()
    }
}

impl Resolve for Scripted {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        assert_eq!(port, PORT);
        self.calls
            .locked()
            .push((host.to_string(), tokio::time::Instant::now()));
        let answer = self.answers.locked().get(host).cloned();
        Box::pin(async move {
            match answer {
                Some(Ok(a)) => Ok(a),
                Some(Err(e)) => Err(std::io::Error::other(e)),
                None => Err(std::io::Error::other(format!("NXDOMAIN {host}"))),
            }
        })
    }
}

fn addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), PORT)
}

/// A model with ServiceEntry `api.dns.test:80` of `resolution` over
/// host-named `endpoints`, under MeshConfig `mesh`.
fn model(resolution: &str, endpoints: &[&str], mesh: &str) -> Arc<Model> {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.dns.test]
  location: MESH_EXTERNAL
  resolution: {resolution}
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
"
    );
    for e in endpoints {
        yaml.push_str(&format!("  - address: {e}\n    ports: {{http: {PORT}}}\n"));
    }
    let loaded = mesh_core::config::load_str(&yaml, "t.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mesh = match mesh {
        "" => Default::default(),
        text => mesh_config_from_str(text, "mesh.yaml").unwrap(),
    };
    let m = mesh_core::compile::compile(
        &loaded.resources,
        &mesh,
        &Client::new("default", Labels::new()),
    );
    assert!(m.clusters.contains_key(CLUSTER), "{:?}", m.clusters.keys());
    Arc::new(m)
}

/// The same model with `CLUSTER` gone (another service instead).
fn model_without_cluster() -> Arc<Model> {
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: default}
spec:
  hosts: [other.dns.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.9.9.9}]
";
    let loaded = mesh_core::config::load_str(yaml, "t.yaml");
    Arc::new(mesh_core::compile::compile(
        &loaded.resources,
        &Default::default(),
        &Client::new("default", Labels::new()),
    ))
}

fn endpoints(resolver: &Arc<Scripted>) -> Endpoints {
    Endpoints::builder().resolver(resolver.clone()).build()
}

/// Brings up the state of `CLUSTER` as a first request does.
async fn first_use(ep: &Endpoints, model: &Arc<Model>) {
    ep.state_for(model, &model.clusters[CLUSTER]).await;
}

/// The cluster's endpoint addresses now, sorted.
fn addrs(ep: &Endpoints) -> Vec<SocketAddr> {
    let st = ep.inner.clusters.locked().get(CLUSTER).cloned().unwrap();
    let core = st.core.locked();
    let mut v: Vec<SocketAddr> = core.lb.endpoints().iter().map(|e| e.key).collect();
    v.sort();
    v
}

/// Lets the paused clock run to `secs` after `start` (every timer due
/// until then fires first).
async fn at(start: tokio::time::Instant, secs: f64) {
    tokio::time::sleep_until(start + Duration::from_secs_f64(secs)).await;
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[test]
fn refresh_interval_is_the_rate_or_a_respected_ttl_with_a_floor() {
    let secs = |s| Some(mesh_core::config::common::Duration(Duration::from_secs(s)));
    let ttl = Some(Duration::from_secs(30));
    assert_eq!(refresh_after(None, None), DEFAULT_REFRESH);
    assert_eq!(refresh_after(None, ttl), DEFAULT_REFRESH, "no TTL respect");
    let respect = DnsRefresh {
        rate: secs(7),
        respect_ttl: true,
    };
    assert_eq!(refresh_after(Some(respect), None), Duration::from_secs(7));
    assert_eq!(refresh_after(Some(respect), ttl), Duration::from_secs(30));
    assert_eq!(
        refresh_after(Some(respect), Some(Duration::from_millis(10))),
        MIN_TTL,
        "a tiny TTL is floored"
    );
    assert_eq!(
        refresh_after(Some(respect), Some(Duration::ZERO)),
        Duration::from_secs(7),
        "a zero TTL means the rate"
    );
    let ignore = DnsRefresh {
        rate: secs(7),
        respect_ttl: false,
    };
    assert_eq!(refresh_after(Some(ignore), ttl), Duration::from_secs(7));
    let default_rate = DnsRefresh {
        rate: None,
        respect_ttl: false,
    };
    assert_eq!(refresh_after(Some(default_rate), None), DEFAULT_REFRESH);
}

#[tokio::test(start_paused = true)]
async fn names_are_looked_up_again_every_five_seconds_by_default() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "")).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1")]);
    assert_eq!(r.calls("a.dns.test", start), [0.0]);

    r.set("a.dns.test", &["10.0.0.2"]);
    at(start, 4.9).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1")], "not yet looked up again");
    at(start, 5.1).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.2")]);
    at(start, 10.1).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 5.0, 10.0]);
}

#[tokio::test(start_paused = true)]
async fn names_are_looked_up_again_at_the_configured_rate() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "dnsRefreshRate: 2s\n")).await;
    r.set("a.dns.test", &["10.0.0.3"]);
    at(start, 2.1).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.3")]);
    at(start, 6.5).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 2.0, 4.0, 6.0]);
}

#[tokio::test(start_paused = true)]
async fn a_reported_ttl_decides_when_the_cluster_respects_it() {
    // Compiled DNS clusters respect TTLs, as Istio's do.
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.answer("a.dns.test", &["10.0.0.1"], Some(Duration::from_secs(30)));
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "")).await;
    at(start, 29.0).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0], "the TTL, not 5 s");
    // The next answer has no TTL: the rate applies again.
    r.set("a.dns.test", &["10.0.0.2"]);
    at(start, 31.0).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 30.0]);
    assert_eq!(addrs(&ep), [addr("10.0.0.2")]);
    at(start, 35.5).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 30.0, 35.0]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_lookup_keeps_the_last_good_addresses_and_retries() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.answer("a.dns.test", &["10.0.0.1"], Some(Duration::from_secs(60)));
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "dnsRefreshRate: 3s\n")).await;
    r.fail("a.dns.test");
    at(start, 61.0).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1")], "kept after a failure");
    // Retried at the refresh rate (a failure has no TTL).
    at(start, 66.5).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 60.0, 63.0, 66.0]);
    assert_eq!(addrs(&ep), [addr("10.0.0.1")]);
    r.set("a.dns.test", &["10.0.0.2"]);
    at(start, 69.5).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.2")]);
}

#[tokio::test(start_paused = true)]
async fn a_name_that_never_answered_is_retried_in_the_background_not_per_request() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.fail("a.dns.test");
    let ep = endpoints(&r);
    let m = model("DNS", &["a.dns.test"], "");
    first_use(&ep, &m).await;
    assert_eq!(addrs(&ep), []);
    // Later requests find the state answered (with nothing) and wait for
    // no lookup of their own.
    first_use(&ep, &m).await;
    assert!(ep.state_now(&m, &m.clusters[CLUSTER]).is_some());
    assert_eq!(r.calls("a.dns.test", start), [0.0]);
    r.set("a.dns.test", &["10.0.0.1"]);
    at(start, 5.5).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1")]);
}

#[tokio::test(start_paused = true)]
async fn strict_dns_uses_every_address_of_every_name() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1", "10.0.0.2"]);
    r.set("b.dns.test", &["10.0.0.3", "10.0.0.1"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test", "b.dns.test"], "")).await;
    assert_eq!(
        addrs(&ep),
        [addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3")],
        "every address, each once"
    );
    r.set("b.dns.test", &["10.0.0.4"]);
    at(start, 5.5).await;
    assert_eq!(
        addrs(&ep),
        [addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.4")]
    );
}

#[tokio::test(start_paused = true)]
async fn logical_dns_uses_the_first_address_only() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.2", "10.0.0.1"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS_ROUND_ROBIN", &["a.dns.test"], "")).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.2")]);
    r.set("a.dns.test", &["10.0.0.1", "10.0.0.2"]);
    at(start, 5.5).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1")], "the new first address");
}

#[tokio::test(start_paused = true)]
async fn endpoints_that_stay_keep_their_state_and_connections() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1", "10.0.0.2"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "")).await;
    let st = ep.inner.clusters.locked().get(CLUSTER).cloned().unwrap();
    let target = |a: SocketAddr| {
        let core = st.core.locked();
        let t = core.targets.iter().find(|t| t.addr == a).cloned().unwrap();
        (t.shared, t.pool)
    };
    let (shared, pool) = target(addr("10.0.0.1"));
    r.set("a.dns.test", &["10.0.0.3", "10.0.0.1"]);
    at(start, 5.5).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1"), addr("10.0.0.3")]);
    let (shared2, pool2) = target(addr("10.0.0.1"));
    assert!(Arc::ptr_eq(&shared, &shared2), "same per-endpoint state");
    assert!(Arc::ptr_eq(&pool, &pool2), "same connections");
    assert!(st
        .core
        .locked()
        .targets
        .iter()
        .all(|t| t.addr != addr("10.0.0.2")));
}

#[tokio::test(start_paused = true)]
async fn a_new_model_looks_up_only_the_names_it_adds() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1"]);
    r.set("b.dns.test", &["10.0.0.2"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "")).await;
    at(start, 1.0).await;
    let m2 = model("DNS", &["a.dns.test", "b.dns.test"], "");
    assert!(
        ep.state_now(&m2, &m2.clusters[CLUSTER]).is_some(),
        "the state is at hand"
    );
    first_use(&ep, &m2).await;
    assert_eq!(addrs(&ep), [addr("10.0.0.1"), addr("10.0.0.2")]);
    assert_eq!(r.calls("a.dns.test", start), [0.0]);
    assert_eq!(r.calls("b.dns.test", start), [1.0]);
    // Each keeps its own schedule.
    at(start, 6.5).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 5.0]);
    assert_eq!(r.calls("b.dns.test", start), [1.0, 6.0]);
}

#[tokio::test(start_paused = true)]
async fn the_refresh_stops_when_the_cluster_leaves_the_model() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "")).await;
    assert_eq!(alive_tasks(), 1);
    // A request on a model without the cluster makes the stage forget it.
    let other = model_without_cluster();
    ep.state_for(&other, &other.clusters["outbound|80||other.dns.test"])
        .await;
    at(start, 30.0).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0]);
    assert_eq!(alive_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_refresh_stops_when_the_live_model_drops_the_cluster() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1"]);
    let m = model("DNS", &["a.dns.test"], "");
    let (tx, rx) = tokio::sync::watch::channel(m.clone());
    let ep = Endpoints::builder().resolver(r.clone()).model(rx).build();
    first_use(&ep, &m).await;
    assert_eq!(alive_tasks(), 1);
    // No request needed: the task follows the live model.
    tx.send(model_without_cluster()).unwrap();
    at(start, 0.001).await;
    assert_eq!(alive_tasks(), 0);
    assert_eq!(r.calls("a.dns.test", start), [0.0]);
    // The cluster back: its next request looks the names up again.
    tx.send(m.clone()).unwrap();
    assert!(ep.state_now(&m, &m.clusters[CLUSTER]).is_some());
    first_use(&ep, &m).await;
    assert_eq!(r.calls("a.dns.test", start), [0.0, 0.001]);
    assert_eq!(alive_tasks(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_refresh_stops_with_the_balancer() {
    let start = tokio::time::Instant::now();
    let r = Scripted::new();
    r.set("a.dns.test", &["10.0.0.1"]);
    let ep = endpoints(&r);
    first_use(&ep, &model("DNS", &["a.dns.test"], "")).await;
    assert_eq!(alive_tasks(), 1);
    drop(ep);
    at(start, 30.0).await;
    assert_eq!(alive_tasks(), 0);
    assert_eq!(r.calls("a.dns.test", start), [0.0]);
}
