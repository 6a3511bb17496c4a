//! Our SDK's server side fed by istiod and by meshd: the server-listener
//! client `Mesh::xds(..).inbound_ports([..])` runs (an
//! [`XdsClient`] that names the workload's inbound listener, since istiod
//! sends server listeners only to a client that names them) decodes, from
//! istiod, the standard RBAC filters (enforced with Envoy's semantics),
//! and from meshd, the compiled policy in our metadata. The two inbound
//! policies must decide a corpus of requests alike (istiod's JWT rule, a
//! metadata matcher, reads as "no token" on both sides).

use std::time::Duration;

use mesh_core::authz::{PolicySet, Request, Verdict};
use mesh_interop::control::yaml_dir;
use mesh_interop::istiod::Istiod;
use mesh_interop::server_side::free_port;
use mesh_interop::{ControlPlane, HarnessError};
use mesh_xds::client::{XdsClient, XdsClientConfig};
use mesh_xds::encode::inbound_listener_name;
use mesh_xds::node::NodeInfo;

use super::diff::Difference;

const AREA: &str = "sdk-inbound";
const IP: &str = "127.0.0.60";

fn config(port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: authz-sdk, namespace: interop}}
spec:
  hosts: [authz-sdk.interop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC, targetPort: {port}}}]
  workloadSelector: {{labels: {{app: authz-sdk}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: authz-sdk, namespace: interop}}
spec:
  address: {IP}
  labels: {{app: authz-sdk}}
  serviceAccount: authz-sdk
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-cart-writes, namespace: interop}}
spec:
  selector: {{matchLabels: {{app: authz-sdk}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/shop.Cart/{{*}}"], notPaths: ["/shop.Cart/Get"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: interop}}
spec:
  selector: {{matchLabels: {{app: authz-sdk}}}}
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/interop/sa/web"]}}}}]
  - from: [{{source: {{namespaces: ["prod-*"]}}}}]
    to: [{{operation: {{paths: ["/admin.Ops/*"]}}}}]
  - to: [{{operation: {{paths: ["/echo.Echo/Hello", "/shop.Cart/Get"], methods: ["POST"]}}}}]
    when: [{{key: "request.headers[x-env]", notValues: ["test*"]}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/other.Svc/*"]}}}}]
"#
    )
}

fn node(port: u16) -> XdsClientConfig {
    let mut labels = mesh_core::config::common::Labels::new();
    labels.insert("app".into(), "authz-sdk".into());
    let info = NodeInfo {
        namespace: Some("interop".into()),
        labels,
        service_account: Some("authz-sdk".into()),
        instance_ips: vec![IP.into()],
        workload_name: Some("authz-sdk".into()),
        ..NodeInfo::default()
    };
    let mut cfg = XdsClientConfig::new(Vec::<String>::new(), info);
    cfg.only_listeners = Some(vec![inbound_listener_name("0.0.0.0", port)]);
    cfg
}

async fn policy(
    addr: std::net::SocketAddr,
    port: u16,
    who: &str,
) -> Result<(XdsClient, PolicySet, Vec<String>), HarnessError> {
    let mut cfg = node(port);
    cfg.servers = vec![format!("http://{addr}")];
    let client = XdsClient::start(cfg).map_err(|e| HarnessError::Script {
        script: format!("server-listener xDS client of {who}"),
        message: e.to_string(),
    })?;
    let model = client
        .ready(Duration::from_secs(30))
        .await
        .map_err(|e| HarnessError::Script {
            script: format!("server-listener xDS client of {who}"),
            message: e.to_string(),
        })?;
    Ok((
        client,
        model.inbound.authz.clone(),
        model.inbound.listeners.clone(),
    ))
}

/// Runs the comparison; the number of decisions compared and the
/// differences.
pub async fn run() -> Result<(usize, Vec<Difference>), HarnessError> {
    let port = free_port()?;
    let dir = yaml_dir(&config(port))?;
    let istiod = Istiod::start(dir.path()).await?;
    let meshd = ControlPlane::start(dir.path()).await?;
    let (_ci, from_istiod, li) = policy(istiod.xds_addr(), port, "istiod").await?;
    let (_cm, from_meshd, lm) = policy(meshd.xds_addr(), port, "meshd").await?;
    let mut diffs = Vec::new();
    for (who, l, set) in [("istiod", &li, &from_istiod), ("meshd", &lm, &from_meshd)] {
        if l.is_empty() {
            diffs.push(Difference {
                area: AREA,
                case: "server listener".into(),
                request: format!("{} answered", inbound_listener_name("0.0.0.0", port)),
                istiod: if who == "istiod" {
                    "no listener".into()
                } else {
                    "-".into()
                },
                meshd: if who == "meshd" {
                    "no listener".into()
                } else {
                    "-".into()
                },
            });
        }
        let _ = set;
    }
    if from_istiod.rbac().is_none() {
        diffs.push(Difference {
            area: AREA,
            case: "decoding".into(),
            request: "istiod's listener decodes to RBAC filters".into(),
            istiod: format!("{from_istiod:?}"),
            meshd: "-".into(),
        });
    }
    let peers = [
        None,
        Some("spiffe://cluster.local/ns/interop/sa/web"),
        Some("spiffe://cluster.local/ns/prod-eu/sa/job"),
        Some("spiffe://cluster.local/ns/dev/sa/x"),
    ];
    let paths = [
        "/echo.Echo/Hello",
        "/shop.Cart/Add",
        "/shop.Cart/Get",
        "/admin.Ops/Reset",
        "/other.Svc/Get",
    ];
    let mut compared = 0;
    let (mut allows, mut denies) = (0, 0);
    for peer in peers {
        for path in paths {
            for env in [None, Some("test-1"), Some("prod")] {
                let mut r = Request::http("POST", path);
                r.port = port;
                r.host = "authz-sdk.interop.svc.cluster.local:7070".into();
                r.source_ip = "127.0.0.1".parse().ok();
                r.source_principal = peer.map(str::to_string);
                if let Some(v) = env {
                    r = r.with_header("x-env", v);
                }
                let decide = |s: &PolicySet| {
                    let c = s.check(&r);
                    if c.verdict == Verdict::Allow && c.custom_provider.is_none() {
                        "ALLOW"
                    } else {
                        "DENY"
                    }
                };
                compared += 1;
                let (i, m) = (decide(&from_istiod), decide(&from_meshd));
                if m == "ALLOW" {
                    allows += 1;
                } else {
                    denies += 1;
                }
                if i != m {
                    diffs.push(Difference {
                        area: AREA,
                        case: format!("peer {}", peer.unwrap_or("(plaintext)")),
                        request: format!("POST {path} x-env={env:?}"),
                        istiod: format!("{i}: {}", from_istiod.evaluate(&r).reason),
                        meshd: format!("{m}: {}", from_meshd.evaluate(&r).reason),
                    });
                }
            }
        }
    }
    if allows < 10 || denies < 10 {
        diffs.push(Difference {
            area: AREA,
            case: "corpus".into(),
            request: "both outcomes exercised".into(),
            istiod: "-".into(),
            meshd: format!("{allows} allowed, {denies} denied"),
        });
    }
    eprintln!(
        "sdk-inbound: {allows} allowed, {denies} denied; istiod listeners {li:?} ({} RBAC policies), meshd listeners {lm:?}; {compared} decisions",
        from_istiod.rbac().map_or(0, |r| r.policy_names().len())
    );
    Ok((compared, diffs))
}
