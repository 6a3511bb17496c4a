//! The stock grpcio client, configured only by its bootstrap, run against
//! istiod and against meshd on the same YAML and the same backends, probe
//! by probe: splits (proportions within statistical bounds), header and
//! path routes, faults, retries (explicit, disabled and Istio's default),
//! timeouts, ring hash and locality weights.

use mesh_interop::backend::{Backend, Behavior};
use mesh_interop::clients::{write_bootstrap, Report, Tool};
use mesh_interop::control::yaml_dir;
use mesh_interop::istiod::Istiod;
use mesh_interop::scenario::{self, NAMESPACE, RUN_TIMEOUT};
use mesh_interop::{ControlPlane, HarnessError};

use super::diff::Difference;

const AREA: &str = "stock-client";

/// The backends of the existing interop scenario (same names, same
/// behaviour), so its YAML can be reused as it is.
pub const BACKENDS: &[(&str, Behavior)] = &[
    ("v1", Behavior::Ok),
    ("v2", Behavior::Ok),
    ("flaky", Behavior::FailFirstAttempt),
    ("slow", Behavior::Slow(std::time::Duration::from_secs(1))),
    ("h1", Behavior::Ok),
    ("h2", Behavior::Ok),
    ("h3", Behavior::Ok),
];

/// Services this comparison adds to the interop scenario's YAML: Istio's
/// default retry policy (no VirtualService), `retryOn` values gRPC cannot
/// use, path and header matches of each kind, and a three-way split.
pub fn extra_config(port: impl Fn(&str) -> u16) -> String {
    let se = |name: &str, eps: &[(&str, &str)]| {
        let eps: String = eps
            .iter()
            .map(|(b, v)| {
                format!(
                    "  - {{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{app: {name}, version: {v}}}}}\n",
                    port(b)
                )
            })
            .collect();
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  hosts: [{name}.{NAMESPACE}.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
{eps}"
        )
    };
    let mut y = String::new();
    y += &se("defretry", &[("flaky", "v1")]);
    y += &se("retry5xx", &[("flaky", "v1")]);
    y += &se("retrycodes", &[("flaky", "v1")]);
    y += &se("paths", &[("v1", "v1"), ("v2", "v2")]);
    y += &se("three", &[("h1", "a"), ("h2", "b"), ("h3", "c")]);
    y += &se("redir", &[("v1", "v1")]);
    y += "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retry5xx, namespace: interop}
spec:
  hosts: [retry5xx.interop.test]
  http:
  - route: [{destination: {host: retry5xx.interop.test}}]
    retries: {attempts: 3, retryOn: 5xx}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retrycodes, namespace: interop}
spec:
  hosts: [retrycodes.interop.test]
  http:
  - route: [{destination: {host: retrycodes.interop.test}}]
    retries: {attempts: 3, retryOn: 'cancelled,resource-exhausted'}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: paths, namespace: interop}
spec:
  host: paths.interop.test
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: paths, namespace: interop}
spec:
  hosts: [paths.interop.test]
  http:
  - name: exact-path-and-header-prefix
    match: [{uri: {exact: /echo.Echo/Hello}, headers: {x-user: {prefix: adm}}}]
    route: [{destination: {host: paths.interop.test, subset: v2}}]
  - name: path-prefix
    match: [{uri: {prefix: /echo.Echo/Forb}}]
    route: [{destination: {host: paths.interop.test, subset: v2}}]
  - name: header-regex
    match: [{headers: {x-user: {regex: 'b.b'}}}]
    route: [{destination: {host: paths.interop.test, subset: v2}}]
  - name: path-regex
    match: [{uri: {regex: '/echo\\.Echo/Sec.*'}}]
    route: [{destination: {host: paths.interop.test, subset: v2}}]
  - name: rest
    route: [{destination: {host: paths.interop.test, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redir, namespace: interop}
spec:
  hosts: [redir.interop.test]
  http:
  - name: redirect
    match: [{headers: {x-redirect: {exact: '1'}}}]
    redirect: {uri: /elsewhere, authority: other.example.com}
  - name: direct
    match: [{headers: {x-direct: {exact: '1'}}}]
    directResponse: {status: 503}
  - route: [{destination: {host: redir.interop.test}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: three, namespace: interop}
spec:
  host: three.interop.test
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
  - {name: c, labels: {version: c}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: three, namespace: interop}
spec:
  hosts: [three.interop.test]
  http:
  - route:
    - {destination: {host: three.interop.test, subset: a}, weight: 50}
    - {destination: {host: three.interop.test, subset: b}, weight: 30}
    - {destination: {host: three.interop.test, subset: c}, weight: 20}
";
    y
}

/// The whole YAML both control planes get: the interop scenario's, with
/// the one value istiod cannot read quoted (`add: {x-trace: on}` is the
/// boolean `true` to istiod's YAML 1.1 parser, and a header value must be
/// a string, so istiod refuses the whole directory; meshd reads YAML 1.2,
/// where `on` is a string), and this comparison's services.
pub fn config(port: impl Fn(&str) -> u16 + Copy) -> String {
    let mut y = scenario::config(port, false).replace("x-trace: on}", "x-trace: 'on'}");
    y += &extra_config(port);
    y
}

/// How two reports of the same probe are compared.
#[derive(Debug, Clone, Copy)]
enum Compare {
    /// Status codes and backends call for call.
    Exact,
    /// Shares per backend and per status within 4 sigma of each other.
    Shares,
    /// Exact, and the latency statistic on the same side of a bound.
    Latency {
        stat: &'static str,
        at_least_ms: f64,
    },
    /// Every key sticks to one backend on both, and the same backend.
    Sticky,
}

struct Probe {
    name: &'static str,
    service: &'static str,
    count: u32,
    args: &'static [&'static str],
    compare: Compare,
}

const PROBES: &[Probe] = &[
    Probe {
        name: "resolves",
        service: "fault",
        count: 20,
        args: &[],
        compare: Compare::Exact,
    },
    Probe {
        name: "split-80-20",
        service: "echo",
        count: 1000,
        args: &[],
        compare: Compare::Shares,
    },
    Probe {
        name: "header-route",
        service: "echo",
        count: 50,
        args: &["--header", "x-canary=yes"],
        compare: Compare::Exact,
    },
    Probe {
        name: "split-50-30-20",
        service: "three",
        count: 600,
        args: &[],
        compare: Compare::Shares,
    },
    Probe {
        name: "exact-path+header-prefix",
        service: "paths",
        count: 10,
        args: &["--header", "x-user=admin"],
        compare: Compare::Exact,
    },
    Probe {
        name: "path-prefix",
        service: "paths",
        count: 10,
        args: &["--method", "/echo.Echo/Forbidden"],
        compare: Compare::Exact,
    },
    Probe {
        name: "header-regex",
        service: "paths",
        count: 10,
        args: &["--header", "x-user=bob"],
        compare: Compare::Exact,
    },
    Probe {
        name: "path-regex",
        service: "paths",
        count: 10,
        args: &["--method", "/echo.Echo/Secret"],
        compare: Compare::Exact,
    },
    Probe {
        name: "no-match-falls-through",
        service: "paths",
        count: 10,
        args: &["--header", "x-user=alice"],
        compare: Compare::Exact,
    },
    Probe {
        name: "retries-unavailable",
        service: "retry",
        count: 30,
        args: &[],
        compare: Compare::Exact,
    },
    Probe {
        name: "retries-attempts-0",
        service: "noretry",
        count: 20,
        args: &[],
        compare: Compare::Exact,
    },
    Probe {
        name: "retries-istio-default",
        service: "defretry",
        count: 20,
        args: &[],
        compare: Compare::Exact,
    },
    Probe {
        name: "retries-retryOn-5xx",
        service: "retry5xx",
        count: 20,
        args: &[],
        compare: Compare::Exact,
    },
    Probe {
        name: "retries-other-codes",
        service: "retrycodes",
        count: 20,
        args: &[],
        compare: Compare::Exact,
    },
    Probe {
        name: "timeout-0.2s",
        service: "slow",
        count: 5,
        args: &[],
        compare: Compare::Latency {
            stat: "max",
            at_least_ms: 900.0,
        },
    },
    Probe {
        name: "no-timeout",
        service: "slowok",
        count: 2,
        args: &[],
        compare: Compare::Latency {
            stat: "min",
            at_least_ms: 900.0,
        },
    },
    Probe {
        name: "fault-abort-grpc",
        service: "fault",
        count: 10,
        args: &["--header", "x-fault=abort-grpc"],
        compare: Compare::Exact,
    },
    Probe {
        name: "fault-abort-http-403",
        service: "fault",
        count: 10,
        args: &["--header", "x-fault=abort-http"],
        compare: Compare::Exact,
    },
    Probe {
        name: "fault-abort-50%",
        service: "fault",
        count: 200,
        args: &["--header", "x-fault=half"],
        compare: Compare::Shares,
    },
    Probe {
        name: "fault-delay-0.3s",
        service: "fault",
        count: 5,
        args: &["--header", "x-fault=delay"],
        compare: Compare::Latency {
            stat: "min",
            at_least_ms: 290.0,
        },
    },
    Probe {
        name: "no-fault",
        service: "fault",
        count: 5,
        args: &[],
        compare: Compare::Latency {
            stat: "p50",
            at_least_ms: 290.0,
        },
    },
    Probe {
        name: "ring-hash-header",
        service: "hash",
        count: 300,
        args: &["--key-header", "x-user", "--keys", "30"],
        compare: Compare::Sticky,
    },
    Probe {
        name: "locality-weights-3-1",
        service: "weighted",
        count: 400,
        args: &[],
        compare: Compare::Shares,
    },
    Probe {
        name: "kitchen-sink-50-50",
        service: "kitchen",
        count: 40,
        args: &["--header", "x-skip=0"],
        compare: Compare::Shares,
    },
    Probe {
        name: "kitchen-redirect-route",
        service: "kitchen",
        count: 5,
        args: &["--header", "x-skip=0", "--header", "x-redirect=1"],
        compare: Compare::Exact,
    },
    Probe {
        name: "redirect-route",
        service: "redir",
        count: 5,
        args: &["--header", "x-redirect=1"],
        compare: Compare::Exact,
    },
    Probe {
        name: "direct-response-route",
        service: "redir",
        count: 5,
        args: &["--header", "x-direct=1"],
        compare: Compare::Exact,
    },
    Probe {
        name: "after-redirect-and-direct-routes",
        service: "redir",
        count: 5,
        args: &[],
        compare: Compare::Exact,
    },
];

fn port_of(backends: &[Backend], name: &str) -> u16 {
    backends
        .iter()
        .find(|b| b.name() == name)
        .map_or(0, Backend::port)
}

fn summary(r: &Report, nacks: &[String]) -> String {
    let mut s = format!(
        "codes {:?} backends {:?} latency_ms min {:.0} p50 {:.0} max {:.0}",
        r.codes(),
        r.backends(),
        r.latency_ms("min"),
        r.latency_ms("p50"),
        r.latency_ms("max")
    );
    if !nacks.is_empty() {
        s += &format!("; the client NACKed: {}", nacks.join(" | "));
    }
    s
}

#[allow(clippy::cast_precision_loss)] // counts are at most a few thousand
fn share(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 / total as f64
    }
}

/// Keys (`backend:NAME`, `code:NAME`) whose shares differ by more than 4
/// sigma of the difference of two binomial proportions.
fn share_differences(a: &Report, b: &Report) -> Vec<String> {
    let (na, nb) = (a.total(), b.total());
    let mut keys: Vec<(String, u64, u64)> = Vec::new();
    let (ba, bb) = (a.backends(), b.backends());
    let (ca, cb) = (a.codes(), b.codes());
    for k in ba.keys().chain(bb.keys()) {
        keys.push((
            format!("backend:{k}"),
            ba.get(k).copied().unwrap_or(0),
            bb.get(k).copied().unwrap_or(0),
        ));
    }
    for k in ca.keys().chain(cb.keys()) {
        keys.push((
            format!("code:{k}"),
            ca.get(k).copied().unwrap_or(0),
            cb.get(k).copied().unwrap_or(0),
        ));
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    if na != nb {
        out.push(format!("calls made {na} vs {nb}"));
    }
    for (k, x, y) in keys {
        let (pa, pb) = (share(x, na), share(y, nb));
        let pooled = share(x + y, na + nb);
        #[allow(clippy::cast_precision_loss)]
        let sigma =
            (pooled * (1.0 - pooled) * (1.0 / na.max(1) as f64 + 1.0 / nb.max(1) as f64)).sqrt();
        if (pa - pb).abs() > 4.0 * sigma + 1e-9 {
            out.push(format!(
                "{k} {pa:.3} vs {pb:.3} (4 sigma = {:.3})",
                4.0 * sigma
            ));
        }
    }
    out
}

fn compare(p: &Probe, i: &Report, m: &Report) -> Option<String> {
    let exact = || {
        let mut w = Vec::new();
        if i.codes() != m.codes() {
            w.push("status codes differ".to_string());
        }
        if i.backends() != m.backends() {
            w.push("backends differ".to_string());
        }
        w
    };
    let why = match p.compare {
        Compare::Exact => exact(),
        Compare::Shares => share_differences(i, m),
        Compare::Latency { stat, at_least_ms } => {
            let mut w = exact();
            let (li, lm) = (i.latency_ms(stat), m.latency_ms(stat));
            if (li >= at_least_ms) != (lm >= at_least_ms) {
                w.push(format!(
                    "latency {stat} {li:.0} ms vs {lm:.0} ms (bound {at_least_ms} ms)"
                ));
            }
            w
        }
        Compare::Sticky => {
            let mut w = exact();
            let sticky = |r: &Report| r.by_key().values().all(|b| b.len() == 1);
            if sticky(i) != sticky(m) {
                w.push(format!("sticky per key: {} vs {}", sticky(i), sticky(m)));
            }
            let map = |r: &Report| {
                r.by_key()
                    .into_iter()
                    .map(|(k, b)| (k, b.into_keys().collect::<Vec<_>>().join("+")))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            let (mi, mm) = (map(i), map(m));
            let moved: Vec<String> = mi
                .iter()
                .filter(|(k, v)| mm.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: {v} vs {}", mm.get(k).map_or("-", String::as_str)))
                .collect();
            if !moved.is_empty() {
                w.push(format!(
                    "key->backend mapping differs for {} of {} keys: {}",
                    moved.len(),
                    mi.len(),
                    moved.join(", ")
                ));
            }
            // Backend counts follow the mapping; reported through it.
            w.retain(|x| x != "backends differ");
            w
        }
    };
    (!why.is_empty()).then(|| why.join("; "))
}

/// Runs every probe against istiod and meshd (alternating, same backends)
/// and returns the number of comparisons and the differences.
pub async fn run(tool: &Tool) -> Result<(usize, Vec<Difference>), HarnessError> {
    let mut backends = Vec::new();
    for (name, behavior) in BACKENDS {
        backends.push(Backend::start(name, *behavior).await?);
    }
    let yaml = config(|n| port_of(&backends, n));
    let dir = yaml_dir(&yaml)?;
    let istiod = Istiod::start(dir.path()).await?;
    let meshd = ControlPlane::start(dir.path()).await?;
    let scratch = tempfile::tempdir().map_err(|e| HarnessError::Io {
        what: "creating a temp dir".into(),
        source: e,
    })?;
    let flags = [
        "--namespace",
        NAMESPACE,
        "--labels",
        "app=interop-client",
        "--workload-name",
        "interop-client",
    ];
    let boot_i = write_bootstrap(scratch.path(), "istiod-client", istiod.xds_addr(), &flags)?;
    let boot_m = write_bootstrap(scratch.path(), "meshd-client", meshd.xds_addr(), &flags)?;

    let mut diffs = Vec::new();
    for p in PROBES {
        let mut args = vec![
            "--target".to_string(),
            format!("xds:///{}.{NAMESPACE}.test:7070", p.service),
            "--count".to_string(),
            p.count.to_string(),
        ];
        args.extend(p.args.iter().map(ToString::to_string));
        let (i, nacks_i) = istiod.run_client(tool, &boot_i, &args).await?;
        let before = meshd.nack_count();
        let m = tool.run_client(&boot_m, &args, RUN_TIMEOUT).await?;
        let nacks_m = if meshd.nack_count() > before {
            vec![format!("{:?}", meshd.nacks())]
        } else {
            Vec::new()
        };
        let (si, sm) = (summary(&i, &nacks_i), summary(&m, &nacks_m));
        eprintln!("probe {}: istiod {si} | meshd {sm}", p.name);
        let mut what: Vec<String> = compare(p, &i, &m).into_iter().collect();
        if nacks_i.is_empty() != nacks_m.is_empty() {
            what.push("one side's resources were NACKed".into());
        }
        if !what.is_empty() {
            diffs.push(Difference {
                area: AREA,
                case: p.name.to_string(),
                request: format!(
                    "xds:///{}.{NAMESPACE}.test:7070 x{} {} ({})",
                    p.service,
                    p.count,
                    p.args.join(" "),
                    what.join("; ")
                ),
                istiod: si,
                meshd: sm,
            });
        }
    }
    Ok((PROBES.len(), diffs))
}
