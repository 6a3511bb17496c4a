//! The authorization corpus: stock xDS servers (grpcio and grpc-js-xds),
//! each over plaintext and over mesh mTLS, fed one set of
//! AuthorizationPolicies by meshd, and a plan of calls from clients with
//! different identities. Every call's outcome must equal what `meshctl x
//! authz` says a stock server decides for the same request
//! ([`meshctl::authz::explain`]); and it must equal what the engine
//! decides where the lowering is exact (grpc-js-xds cannot evaluate IP
//! blocks, so its filters deny more: never less than the engine).
//!
//! Covered: path templates with notPaths, a dry-run DENY that must not
//! deny, methods (gRPC always sends POST), principals written with
//! `spiffe://`, namespace wildcards and notNamespaces (plaintext included),
//! ipBlocks with notIpBlocks, hosts in another case, `when` header
//! conditions with values and prefixes, DENY over ALLOW.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_ca::{CaConfig, CertificateAuthority};
use mesh_core::authz::{Request, Verdict};
use mesh_core::compile::Compiler;

use crate::clients::{write_bootstrap, Tool};
use crate::control::{yaml_dir, ControlPlane};
use crate::mtls::{ca_err, write_identity_in, TRUST_DOMAIN};
use crate::server_side::free_port;
use crate::HarnessError;

/// The methods every server serves.
pub const METHODS: &[&str] = &[
    "/echo.Echo/Hello",
    "/echo.Echo/Forbidden",
    "/shop.Cart/Add",
    "/shop.Cart/Get",
    "/shop.Cart/Remove",
    "/admin.Ops/Reset",
];

/// The policies, selected by `app: authz-server`.
pub const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-cart-writes, namespace: interop}
spec:
  selector: {matchLabels: {app: authz-server}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/shop.Cart/{*}"], notPaths: ["/shop.Cart/Get"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny-all
  namespace: interop
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: authz-server}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin-outsiders, namespace: interop}
spec:
  selector: {matchLabels: {app: authz-server}}
  action: DENY
  rules:
  - from: [{source: {notNamespaces: ["interop", "prod-*"]}}]
    to: [{operation: {paths: ["/admin.Ops/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-test-env, namespace: interop}
spec:
  selector: {matchLabels: {app: authz-server}}
  action: DENY
  rules:
  - when: [{key: "request.headers[x-env]", values: ["test*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: interop}
spec:
  selector: {matchLabels: {app: authz-server}}
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/interop/sa/web"]}}]
  - from: [{source: {namespaces: ["prod-*"]}}]
    to: [{operation: {paths: ["/admin.Ops/*", "/shop.Cart/{*}"]}}]
  - from: [{source: {ipBlocks: ["127.0.0.0/8"], notIpBlocks: ["127.0.0.2"]}}]
    to: [{operation: {paths: ["/echo.Echo/Hello", "/shop.Cart/Get"], hosts: ["AUTHZ-SERVER.interop.svc.cluster.local:*"]}}]
  - to: [{operation: {methods: ["GET"], paths: ["/echo.Echo/Forbidden"]}}]
  - to: [{operation: {paths: ["/echo.Echo/Forbidden"]}}]
    when: [{key: "request.headers[x-allow]", values: ["yes"]}]
  - from: [{source: {requestPrincipals: ["*"]}}]
"#;

/// One server: its implementation, transport and ports.
struct ServerSpec {
    tool: Tool,
    mtls: bool,
    /// The port it binds (the workload port).
    port: u16,
    /// The Service port that targets it.
    service_port: u16,
}

/// Service, workload, mTLS per port and the policies.
fn config(servers: &[ServerSpec]) -> String {
    let ports: Vec<String> = servers
        .iter()
        .map(|s| {
            format!(
                "  - {{name: grpc-{}, port: {}, targetPort: {}, appProtocol: grpc}}",
                s.service_port, s.service_port, s.port
            )
        })
        .collect();
    let plain: Vec<String> = servers
        .iter()
        .filter(|s| !s.mtls)
        .map(|s| format!("    {}: {{mode: DISABLE}}", s.port))
        .collect();
    let tls: Vec<String> = servers
        .iter()
        .map(|s| {
            format!(
                "    - port: {{number: {}}}\n      tls: {{mode: {}}}",
                s.service_port,
                if s.mtls { "ISTIO_MUTUAL" } else { "DISABLE" }
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: authz-server, namespace: interop}}
spec:
  selector: {{app: authz-server}}
  ports:
{}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: authz-server, namespace: interop}}
spec:
  address: 127.0.0.1
  labels: {{app: authz-server}}
  serviceAccount: authz-server
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: authz-server, namespace: interop}}
spec:
  selector: {{matchLabels: {{app: authz-server}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls:
{}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: authz-server, namespace: interop}}
spec:
  host: authz-server.interop.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
{}
---
{POLICIES}",
        ports.join("\n"),
        plain.join("\n"),
        tls.join("\n"),
    )
}

/// A caller: an mTLS identity (`ns/sa`) or plaintext.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// `(namespace, service account)`; `None` for plaintext.
    pub identity: Option<(&'static str, &'static str)>,
}

/// One planned call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Full method name.
    pub method: &'static str,
    /// Request metadata.
    pub headers: Vec<(&'static str, &'static str)>,
}

fn call(method: &'static str, headers: &[(&'static str, &'static str)]) -> Call {
    Call {
        method,
        headers: headers.to_vec(),
    }
}

/// The plaintext plan.
pub fn plaintext_plan() -> Vec<Call> {
    vec![
        call("/echo.Echo/Hello", &[]),
        call("/shop.Cart/Get", &[]),
        call("/shop.Cart/Add", &[]),
        call("/echo.Echo/Forbidden", &[]),
        call("/echo.Echo/Forbidden", &[("x-allow", "yes")]),
        call("/admin.Ops/Reset", &[]),
        call("/echo.Echo/Hello", &[("x-env", "test-1")]),
        call("/echo.Echo/Hello", &[("x-env", "prod")]),
    ]
}

/// The mTLS callers and their plans.
pub fn mtls_plans() -> Vec<(Caller, Vec<Call>)> {
    let id = |ns, sa| Caller {
        identity: Some((ns, sa)),
    };
    vec![
        (
            id("interop", "web"),
            vec![
                call("/echo.Echo/Hello", &[]),
                call("/shop.Cart/Add", &[]),
                call("/admin.Ops/Reset", &[]),
                call("/echo.Echo/Forbidden", &[]),
                call("/echo.Echo/Hello", &[("x-env", "test")]),
            ],
        ),
        (
            id("prod-eu", "job"),
            vec![
                call("/admin.Ops/Reset", &[]),
                call("/shop.Cart/Remove", &[]),
                call("/shop.Cart/Get", &[]),
                call("/echo.Echo/Hello", &[]),
                call("/echo.Echo/Forbidden", &[]),
            ],
        ),
        (
            id("dev", "x"),
            vec![
                call("/admin.Ops/Reset", &[]),
                call("/echo.Echo/Hello", &[]),
                call("/echo.Echo/Forbidden", &[("x-allow", "yes")]),
                call("/shop.Cart/Get", &[]),
                call("/echo.Echo/Forbidden", &[]),
            ],
        ),
    ]
}

/// The request `meshctl x authz` is asked about for a call.
fn request(caller: Caller, c: &Call, server_port: u16, service_port: u16) -> Request {
    let mut r = Request::http("POST", c.method);
    r.port = server_port;
    r.host = format!("authz-server.interop.svc.cluster.local:{service_port}");
    r.source_ip = "127.0.0.1".parse().ok();
    r.destination_ip = "127.0.0.1".parse().ok();
    r.source_principal = caller
        .identity
        .map(|(ns, sa)| format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}"));
    for (k, v) in &c.headers {
        r = r.with_header(k, v);
    }
    r
}

/// One compared call.
#[derive(Debug)]
pub struct Outcome {
    /// Which server and caller.
    pub what: String,
    /// The status code the stock client got.
    pub code: String,
    /// What `meshctl x authz` says a stock server decides.
    pub expected: Verdict,
    /// What the engine decides.
    pub engine: Verdict,
    /// The stock server's filters mean exactly what the policies mean.
    pub exact: bool,
}

impl Outcome {
    /// The stock server agreed with `meshctl x authz`.
    pub fn agrees(&self) -> bool {
        matches!(
            (self.expected, self.code.as_str()),
            (Verdict::Allow, "OK") | (Verdict::Deny, "PERMISSION_DENIED")
        )
    }
}

fn write_plan(dir: &Path, name: &str, plan: &[Call]) -> Result<PathBuf, HarnessError> {
    let v: Vec<serde_json::Value> = plan
        .iter()
        .map(|c| {
            serde_json::json!({
                "method": c.method,
                "headers": c.headers.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let path = dir.join(format!("{name}.plan.json"));
    std::fs::write(&path, serde_json::Value::Array(v).to_string())
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Runs the corpus with `python` and `node` servers (and clients of the
/// same implementation), returning every call's outcome.
pub async fn run(python: &Tool, node: &Tool) -> Result<Vec<Outcome>, HarnessError> {
    let (ca, _) =
        CertificateAuthority::new_self_signed(CaConfig::new(TRUST_DOMAIN)).map_err(ca_err)?;
    let mut servers = Vec::new();
    for (i, (tool, mtls)) in [(python, false), (python, true), (node, false), (node, true)]
        .into_iter()
        .enumerate()
    {
        servers.push(ServerSpec {
            tool: tool.clone(),
            mtls,
            port: free_port()?,
            service_port: 7101 + i as u16,
        });
    }
    let yaml = config(&servers);
    let dir = yaml_dir(&yaml)?;
    let cp = ControlPlane::start(dir.path()).await?;
    let scratch = tempfile::tempdir().map_err(|e| HarnessError::io("creating a temp dir", e))?;
    let boot = |name: &str, ns: &str, sa: &str, labels: &str| -> Result<PathBuf, HarnessError> {
        let certs = write_identity_in(&ca, scratch.path(), ns, sa)?;
        let certs = certs.display().to_string();
        let mut flags = vec![
            "--namespace",
            ns,
            "--service-account",
            sa,
            "--workload-name",
            name,
            "--cert-dir",
            certs.as_str(),
        ];
        if !labels.is_empty() {
            flags.extend(["--labels", labels]);
        }
        write_bootstrap(scratch.path(), name, cp.xds_addr(), &flags)
    };

    // One node per implementation: meshd tailors the RBAC filters to what
    // each kind of server can evaluate, per node.
    let python_boot = boot(
        "authz-server-py",
        "interop",
        "authz-server",
        "app=authz-server",
    )?;
    let node_boot = boot(
        "authz-server-js",
        "interop",
        "authz-server",
        "app=authz-server",
    )?;
    let mut running = Vec::new();
    for s in &servers {
        let server_boot = match s.tool.lang() {
            crate::Lang::Python => &python_boot,
            crate::Lang::Node => &node_boot,
        };
        running.push(
            s.tool
                .spawn_server(
                    "xds_server",
                    server_boot,
                    &[
                        "--port".into(),
                        s.port.to_string(),
                        "--name".into(),
                        "authz-server".into(),
                        "--methods".into(),
                        METHODS.join(","),
                    ],
                    Duration::from_secs(20),
                )
                .await?,
        );
    }

    // What meshctl says, from the same YAML.
    let loaded = mesh_core::config::load_str(&yaml, "corpus.yaml");
    if !loaded.errors.is_empty() {
        return Err(HarnessError::Config {
            dir: dir.path().display().to_string(),
            message: format!("{:?}", loaded.errors),
        });
    }
    let compiler = Compiler::new(loaded.resources, Default::default());
    let labels = [("app".to_string(), "authz-server".to_string())]
        .into_iter()
        .collect();
    let set = meshctl::authz::policy_set(&compiler, "interop", labels);

    let plain_boot = boot("caller-plain", "interop", "caller", "")?;
    let mut out = Vec::new();
    for s in &servers {
        let plans: Vec<(Caller, Vec<Call>, PathBuf)> = if s.mtls {
            mtls_plans()
                .into_iter()
                .map(|(caller, plan)| {
                    let (ns, sa) = caller.identity.unwrap_or(("interop", "caller"));
                    boot(&format!("caller-{ns}-{sa}"), ns, sa, "").map(|b| (caller, plan, b))
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![(
                Caller { identity: None },
                plaintext_plan(),
                plain_boot.clone(),
            )]
        };
        for (caller, plan, client_boot) in plans {
            let who = caller
                .identity
                .map_or("plaintext".to_string(), |(ns, sa)| format!("{ns}/{sa}"));
            let plan_file = write_plan(
                scratch.path(),
                &format!("{}-{who}", s.port).replace('/', "-"),
                &plan,
            )?;
            let target = format!(
                "xds:///authz-server.interop.svc.cluster.local:{}",
                s.service_port
            );
            let mut args: Vec<String> = [
                "--target",
                &target,
                "--count",
                "0",
                "--warmup-deadline",
                "10",
                "--plan",
                &plan_file.display().to_string(),
            ]
            .iter()
            .map(ToString::to_string)
            .collect();
            if s.mtls {
                args.push("--xds-creds".into());
            }
            let report = cp.run_checked(&s.tool, &client_boot, &args).await?;
            let codes: Vec<String> = report.0["plan"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if codes.len() != plan.len() {
                return Err(HarnessError::Script {
                    script: format!("{:?} client", s.tool.lang()),
                    message: format!(
                        "reported {} outcomes for {} planned calls: {report}",
                        codes.len(),
                        plan.len()
                    ),
                });
            }
            for (c, code) in plan.iter().zip(codes) {
                let req = request(caller, c, s.port, s.service_port);
                let stock = match s.tool.lang() {
                    crate::Lang::Python => mesh_core::authz::StockServer::Grpc,
                    crate::Lang::Node => mesh_core::authz::StockServer::GrpcJs,
                };
                let explained = meshctl::authz::explain(&set, &req, stock);
                out.push(Outcome {
                    what: format!(
                        "{:?} server on {} ({}), caller {who}, {} {:?}",
                        s.tool.lang(),
                        s.port,
                        if s.mtls { "mTLS" } else { "plaintext" },
                        c.method,
                        c.headers
                    ),
                    code,
                    expected: explained.stock_grpc_server.decision,
                    engine: if explained.engine.is_allowed() {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    },
                    exact: explained.stock_grpc_server.exact,
                });
            }
        }
    }
    drop(running);
    Ok(out)
}
