//! Authorization: the stock Python xDS server (gRFC A36), once fed by
//! istiod and once by meshd, under the same AuthorizationPolicy, over a
//! corpus of calls. Each policy case selects its own workload
//! (`app: authz-<case>`); the workload's ServiceEntry has two endpoints,
//! one per control plane, so the YAML both get is the same. Calls are made
//! directly to each server (a plain tonic client: the server side is what
//! is compared), and every call whose status differs is reported with the
//! policy, the request and both outcomes.
//!
//! Plaintext only: rules on principals, namespaces and request principals
//! are compared as a plaintext caller sees them (no peer identity).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mesh_interop::backend::RawCodec;
use mesh_interop::clients::{write_bootstrap, ServerProcess, Tool};
use mesh_interop::control::yaml_dir;
use mesh_interop::istiod::Istiod;
use mesh_interop::server_side::free_port;
use mesh_interop::{ControlPlane, HarnessError};

use super::diff::Difference;

const AREA: &str = "authz";

/// One policy case: the policy (and any extra ones) for workload
/// `app: authz-<name>`. `PORTS` in a spec is replaced by the two servers'
/// ports.
struct Case {
    name: &'static str,
    /// Namespace of the policy (the servers run in `interop`).
    namespace: &'static str,
    /// The policy's spec after its selector, indented by two spaces.
    spec: &'static str,
    /// A second policy on the same workload, if any.
    extra: Option<&'static str>,
}

const fn case(name: &'static str, spec: &'static str) -> Case {
    Case {
        name,
        namespace: "interop",
        spec,
        extra: None,
    }
}

const CASES: &[Case] = &[
    case("deny-path", "action: DENY\n  rules:\n  - to: [{operation: {paths: [/echo.Echo/Forbidden]}}]\n"),
    case("allow-path-prefix", "action: ALLOW\n  rules:\n  - to: [{operation: {paths: ['/echo.Echo/*']}}]\n"),
    case("allow-path-suffix", "action: ALLOW\n  rules:\n  - to: [{operation: {paths: ['*/Hello']}}]\n"),
    case("allow-path-star", "action: ALLOW\n  rules:\n  - to: [{operation: {paths: ['*']}}]\n"),
    case("allow-path-case", "action: ALLOW\n  rules:\n  - to: [{operation: {paths: [/echo.echo/hello]}}]\n"),
    case("deny-notpaths", "action: DENY\n  rules:\n  - to: [{operation: {notPaths: [/echo.Echo/Hello]}}]\n"),
    case("allow-header-value", "action: ALLOW\n  rules:\n  - when: [{key: 'request.headers[x-user]', values: [alice]}]\n"),
    case("allow-header-prefix", "action: ALLOW\n  rules:\n  - when: [{key: 'request.headers[x-user]', values: ['adm*']}]\n"),
    case("deny-header-notvalues", "action: DENY\n  rules:\n  - when: [{key: 'request.headers[x-user]', notValues: [alice]}]\n"),
    case("allow-methods-post", "action: ALLOW\n  rules:\n  - to: [{operation: {methods: [POST]}}]\n"),
    case("allow-methods-get", "action: ALLOW\n  rules:\n  - to: [{operation: {methods: [GET]}}]\n"),
    case("deny-method-and-path", "action: DENY\n  rules:\n  - to: [{operation: {methods: [POST], paths: [/echo.Echo/Forbidden]}}]\n"),
    case("allow-principals", "action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/interop/sa/client]}}]\n"),
    case("deny-notprincipals", "action: DENY\n  rules:\n  - from: [{source: {notPrincipals: [cluster.local/ns/interop/sa/client]}}]\n"),
    case("allow-namespaces", "action: ALLOW\n  rules:\n  - from: [{source: {namespaces: [interop]}}]\n"),
    case("allow-request-principals", "action: ALLOW\n  rules:\n  - from: [{source: {requestPrincipals: ['*']}}]\n"),
    case("allow-ipblocks", "action: ALLOW\n  rules:\n  - from: [{source: {ipBlocks: [127.0.0.1/32]}}]\n"),
    case("deny-other-ipblocks", "action: DENY\n  rules:\n  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]\n"),
    case("allow-remoteipblocks", "action: ALLOW\n  rules:\n  - from: [{source: {remoteIpBlocks: [127.0.0.0/8]}}]\n"),
    case("allow-ports", "action: ALLOW\n  rules:\n  - to: [{operation: {ports: [PORTS]}}]\n"),
    case("allow-other-port", "action: ALLOW\n  rules:\n  - to: [{operation: {ports: ['9']}}]\n"),
    case("allow-when-destination-port", "action: ALLOW\n  rules:\n  - when: [{key: destination.port, values: [PORTS]}]\n"),
    case("allow-when-source-ip", "action: ALLOW\n  rules:\n  - when: [{key: source.ip, values: [127.0.0.1]}]\n"),
    case("allow-hosts", "action: ALLOW\n  rules:\n  - to: [{operation: {hosts: [authz.example.com]}}]\n"),
    case("allow-all-rule", "action: ALLOW\n  rules:\n  - {}\n"),
    case("allow-nothing", ""),
    case("deny-all-rule", "action: DENY\n  rules:\n  - {}\n"),
    case("audit-only", "action: AUDIT\n  rules:\n  - {}\n"),
    Case {
        name: "allow-and-deny",
        namespace: "interop",
        spec: "action: ALLOW\n  rules:\n  - to: [{operation: {paths: ['/echo.Echo/*']}}]\n",
        extra: Some("action: DENY\n  rules:\n  - when: [{key: 'request.headers[x-user]', values: [bob]}]\n"),
    },
    Case {
        name: "root-namespace-deny",
        namespace: "istio-system",
        spec: "action: DENY\n  rules:\n  - to: [{operation: {paths: [/echo.Echo/Forbidden]}}]\n",
        extra: None,
    },
    Case {
        name: "other-namespace-deny",
        namespace: "elsewhere",
        spec: "action: DENY\n  rules:\n  - {}\n",
        extra: None,
    },
];

/// A call of the corpus.
struct Call {
    path: &'static str,
    authority: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
}

const CALLS: &[Call] = &[
    Call {
        path: "/echo.Echo/Hello",
        authority: None,
        headers: &[],
    },
    Call {
        path: "/echo.Echo/Forbidden",
        authority: None,
        headers: &[],
    },
    Call {
        path: "/echo.Echo/Hello",
        authority: None,
        headers: &[("x-user", "Alice")],
    },
    Call {
        path: "/echo.Echo/Forbidden",
        authority: None,
        headers: &[("x-user", "bob")],
    },
    Call {
        path: "/echo.Echo/Hello",
        authority: None,
        headers: &[("x-user", "alice")],
    },
    Call {
        path: "/echo.Echo/Hello",
        authority: None,
        headers: &[("x-user", "bob")],
    },
    Call {
        path: "/echo.Echo/Hello",
        authority: None,
        headers: &[("x-user", "admin")],
    },
    Call {
        path: "/echo.Echo/Forbidden",
        authority: None,
        headers: &[("x-user", "alice")],
    },
    Call {
        path: "/echo.Echo/Hello",
        authority: Some("authz.example.com"),
        headers: &[],
    },
    Call {
        path: "/echo.Echo/Hello",
        authority: Some("authz.example.com:7070"),
        headers: &[],
    },
];

fn describe(c: &Call) -> String {
    let h: Vec<String> = c.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        "POST {} authority={} headers=[{}]",
        c.path,
        c.authority.unwrap_or("127.0.0.1:<port>"),
        h.join(", ")
    )
}

fn policy_yaml(name: &str, ns: &str, app: &str, spec: &str) -> String {
    let rest = if spec.is_empty() {
        String::new()
    } else {
        format!("  {spec}")
    };
    format!(
        "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
{rest}"
    )
}

/// One server workload of the comparison (a pair of servers: one fed by
/// istiod, one by meshd).
struct Workload {
    /// Its `app` label.
    app: String,
    /// The policy, as the report shows it.
    policy: String,
    /// The two servers' ports (istiod's, meshd's).
    ports: (u16, u16),
    /// The workload's address in the YAML, and the node IP of the
    /// istiod-fed server: istiod finds a proxyless server's workload
    /// (its labels, its ports) by the node's IP, so each workload has its
    /// own loopback address.
    ip: String,
    /// The node IP of the meshd-fed server. The servers bind 127.0.0.1
    /// (`xds_server.py`) and ask for the listener of that address; meshd
    /// answers only names whose IP is a wildcard or one of the node's
    /// `INSTANCE_IPS`, so this is 127.0.0.1 except in the case that shows
    /// exactly that difference.
    meshd_ip: String,
    /// How the YAML describes it.
    shape: Shape,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A WorkloadEntry selected by two ServiceEntries (`workloadSelector`),
    /// one per server (`targetPort` = that server's port).
    Selected,
    /// A ServiceEntry's inline endpoints (no `workloadSelector`).
    Inline,
}

fn workloads(
    ports: &mut impl FnMut() -> Result<u16, HarnessError>,
) -> Result<Vec<Workload>, HarnessError> {
    let mut out = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let mut policy = format!(
            "{}/{}: {}",
            c.namespace,
            c.name,
            c.spec.replace("\n  ", " ").trim()
        );
        if let Some(e) = c.extra {
            policy += &format!(" + {}", e.replace("\n  ", " ").trim());
        }
        out.push(Workload {
            app: format!("authz-{}", c.name),
            policy,
            ports: (ports()?, ports()?),
            ip: format!("127.0.0.{}", 10 + i),
            meshd_ip: "127.0.0.1".into(),
            shape: Shape::Selected,
        });
    }
    out.push(Workload {
        app: "authz-inline-endpoints".into(),
        policy: "no policy; the workload is a ServiceEntry's inline endpoint (no workloadSelector)"
            .into(),
        ports: (ports()?, ports()?),
        ip: "127.0.0.250".into(),
        // The same node IP as istiod's node: both find the workload by it.
        meshd_ip: "127.0.0.250".into(),
        shape: Shape::Inline,
    });
    out.push(Workload {
        app: "authz-bound-elsewhere".into(),
        policy: "no policy; the server binds 127.0.0.1, its node IP (INSTANCE_IPS) is 127.0.0.251"
            .into(),
        ports: (ports()?, ports()?),
        ip: "127.0.0.251".into(),
        meshd_ip: "127.0.0.251".into(),
        shape: Shape::Selected,
    });
    Ok(out)
}

/// The YAML of every workload and case.
fn config(workloads: &[Workload]) -> String {
    let mut y = String::new();
    for w in workloads {
        let (app, ip, (pi, pm)) = (&w.app, &w.ip, w.ports);
        if w.shape == Shape::Inline {
            y += &format!(
                "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {app}, namespace: interop}}
spec:
  hosts: [{app}.interop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: {ip}, ports: {{grpc: {pi}}}, labels: {{app: {app}}}}}
  - {{address: {ip}, ports: {{grpc: {pm}}}, labels: {{app: {app}}}}}
"
            );
            continue;
        }
        for (side, port) in [("i", pi), ("m", pm)] {
            y += &format!(
                "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {app}-{side}, namespace: interop}}
spec:
  hosts: [{app}-{side}.interop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC, targetPort: {port}}}]
  workloadSelector: {{labels: {{app: {app}}}}}
"
            );
        }
        y += &format!(
            "---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {app}, namespace: interop}}
spec:
  address: {ip}
  labels: {{app: {app}}}
"
        );
    }
    for (c, w) in CASES.iter().zip(workloads) {
        let ports = format!("'{}', '{}'", w.ports.0, w.ports.1);
        y += &policy_yaml(
            c.name,
            c.namespace,
            &w.app,
            &c.spec.replace("PORTS", &ports),
        );
        if let Some(extra) = c.extra {
            y += &policy_yaml(
                &format!("{}-2", c.name),
                c.namespace,
                &w.app,
                &extra.replace("PORTS", &ports),
            );
        }
    }
    y
}

/// One unary call on a fresh connection: `OK` or the status code's name.
async fn call(port: u16, c: &Call) -> String {
    let attempt = async {
        let mut ep = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| format!("endpoint: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        if let Some(a) = c.authority {
            let origin: http::Uri = format!("http://{a}")
                .parse()
                .map_err(|e| format!("authority {a}: {e}"))?;
            ep = ep.origin(origin);
        }
        let channel = ep
            .connect()
            .await
            .map_err(|e| format!("UNAVAILABLE (connect: {e})"))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| format!("UNAVAILABLE (not ready: {e})"))?;
        let mut req = tonic::Request::new(Bytes::from_static(b"hello"));
        for (k, v) in c.headers {
            let v = v.parse().map_err(|_| format!("bad header value {v}"))?;
            req.metadata_mut().insert(*k, v);
        }
        let path: http::uri::PathAndQuery = c.path.parse().map_err(|e| format!("path: {e}"))?;
        match grpc.unary(req, path, RawCodec).await {
            Ok(_) => Ok("OK".to_string()),
            Err(s) => Ok(format!("{:?}", s.code())),
        }
    };
    match tokio::time::timeout(Duration::from_secs(8), attempt).await {
        Ok(Ok(code)) | Ok(Err(code)) => code,
        Err(_) => "no answer within 8s".to_string(),
    }
}

/// [`call`], once more after a pause when the first outcome is neither an
/// answer nor an authorization denial (a transport hiccup of the stock
/// server, seen once in a while as `Unknown` or `Cancelled`): a difference
/// is reported only when it holds twice.
async fn outcome(port: u16, c: &Call) -> String {
    let first = call(port, c).await;
    if first == "OK" || first == "PermissionDenied" {
        return first;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = call(port, c).await;
    if second == first {
        first
    } else {
        format!("{second} (first try: {first})")
    }
}

/// Waits until the server on `port` serves (answers anything but
/// UNAVAILABLE), at most 20 s; false if it never does.
async fn serving(port: u16) -> bool {
    let probe = &CALLS[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let code = call(port, probe).await;
        if !code.starts_with("UNAVAILABLE") && code != "Unavailable" {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn spawn(
    py: &Tool,
    dir: &Path,
    xds: std::net::SocketAddr,
    who: &str,
    app: &str,
    port: u16,
    ip: &str,
) -> Result<ServerProcess, HarnessError> {
    let boot = write_bootstrap(
        dir,
        &format!("{who}-{app}"),
        xds,
        &[
            "--namespace",
            "interop",
            "--labels",
            &format!("app={app}"),
            "--workload-name",
            app,
            "--ip",
            ip,
        ],
    )?;
    py.spawn_server(
        "xds_server",
        &boot,
        &[
            "--port".into(),
            port.to_string(),
            "--name".into(),
            format!("{who}-{app}"),
        ],
        Duration::from_secs(30),
    )
    .await
}

/// The outcome of every call to a server that never received its
/// listener (so never served).
const NEVER_SERVED: &str = "never served: no inbound listener (UNAVAILABLE for 20s)";

/// How many cases run at once (two servers each).
const BATCH: usize = 4;

/// Runs every case's corpus against the istiod-fed and the meshd-fed
/// server; returns the number of calls compared and the differences.
pub async fn run(py: &Tool) -> Result<(usize, Vec<Difference>), HarnessError> {
    let workloads = workloads(&mut free_port)?;
    let dir = yaml_dir(&config(&workloads))?;
    let istiod = Istiod::start(dir.path()).await?;
    let meshd = ControlPlane::start(dir.path()).await?;
    let scratch = tempfile::tempdir().map_err(|e| HarnessError::Io {
        what: "creating a temp dir".into(),
        source: e,
    })?;

    let mut diffs = Vec::new();
    let mut compared = 0;
    for batch in workloads.chunks(BATCH) {
        let mut servers = Vec::new();
        for w in batch {
            let (pi, pm) = w.ports;
            let (i, m) = (istiod.xds_addr(), meshd.xds_addr());
            servers.push(spawn(py, scratch.path(), i, "istiod", &w.app, pi, &w.ip).await?);
            servers.push(spawn(py, scratch.path(), m, "meshd", &w.app, pm, &w.meshd_ip).await?);
        }
        for w in batch {
            let (pi, pm) = w.ports;
            let (si, sm) = tokio::join!(serving(pi), serving(pm));
            for call_ in CALLS {
                let i = if si {
                    outcome(pi, call_).await
                } else {
                    NEVER_SERVED.into()
                };
                let m = if sm {
                    outcome(pm, call_).await
                } else {
                    NEVER_SERVED.into()
                };
                compared += 1;
                eprintln!(
                    "authz {} | {} | istiod {i} | meshd {m}",
                    w.app,
                    describe(call_)
                );
                if i != m {
                    diffs.push(Difference {
                        area: AREA,
                        case: w.policy.clone(),
                        request: describe(call_),
                        istiod: i,
                        meshd: m,
                    });
                }
            }
        }
        drop(servers);
    }
    let nacks_i = istiod.nacks();
    if meshd.nack_count() > 0 || !nacks_i.is_empty() {
        diffs.push(Difference {
            area: AREA,
            case: "NACKs".into(),
            request: "the stock servers' NACKs of each control plane's resources".into(),
            istiod: format!("{} NACKs: {}", nacks_i.len(), nacks_i.join(" | ")),
            meshd: format!("{} NACKs: {:?}", meshd.nack_count(), meshd.nacks()),
        });
    }
    Ok((compared, diffs))
}
