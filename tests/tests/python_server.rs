//! Stock Python `grpcio` as a proxyless xDS *server* (gRFC A36) of our
//! control plane: `grpc.server(xds=True)` with the bootstrap from `meshctl
//! bootstrap grpc`, its inbound listener and RBAC filters from an
//! AuthorizationPolicy, and a policy change pushed while it serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mesh_interop::clients::write_bootstrap;
use mesh_interop::control::{write_yaml, yaml_dir};
use mesh_interop::{ControlPlane, Lang, Report, Tool};

fn config(port: u16, deny: bool) -> String {
    let mut y = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: authz-server, namespace: interop}}
spec:
  selector: {{app: authz-server}}
  ports: [{{name: grpc, port: 7070, targetPort: {port}, appProtocol: grpc}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: authz-server, namespace: interop}}
spec:
  address: 127.0.0.1
  labels: {{app: authz-server}}
"
    );
    if deny {
        y += "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-forbidden, namespace: interop}
spec:
  selector: {matchLabels: {app: authz-server}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/echo.Echo/Forbidden]}}]
";
    }
    y
}

fn free_port() -> u16 {
    // gRPC xDS servers name their listener after the port they bind, so
    // the port must be known before the server starts.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn call(
    cp: &ControlPlane,
    tool: &Tool,
    boot: &std::path::Path,
    target: &str,
    method: &str,
    n: u32,
) -> Report {
    let args: Vec<String> = [
        "--target",
        target,
        "--method",
        method,
        "--count",
        &n.to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    cp.run_checked(tool, boot, &args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_xds_server_enforces_authorization_policy() {
    let Some(py) = Tool::find(Lang::Python).unwrap() else {
        return;
    };
    let port = free_port();
    let dir = yaml_dir(&config(port, true)).unwrap();
    let cp = ControlPlane::start(dir.path()).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let server_boot = write_bootstrap(
        scratch.path(),
        "server",
        cp.xds_addr(),
        &[
            "--namespace",
            "interop",
            "--labels",
            "app=authz-server",
            "--workload-name",
            "authz-server",
        ],
    )
    .unwrap();
    let client_boot = write_bootstrap(
        scratch.path(),
        "client",
        cp.xds_addr(),
        &["--namespace", "interop", "--workload-name", "authz-client"],
    )
    .unwrap();
    let _server = py
        .spawn_server(
            "xds_server",
            &server_boot,
            &[
                "--port".into(),
                port.to_string(),
                "--name".into(),
                "authz-server".into(),
            ],
            Duration::from_secs(20),
        )
        .await
        .unwrap();

    // Directly, and through the mesh (xDS client to xDS server).
    let direct = format!("127.0.0.1:{port}");
    let meshed = "xds:///authz-server.interop.svc.cluster.local:7070".to_string();
    for target in [&direct, &meshed] {
        let ok = call(&cp, &py, &client_boot, target, "/echo.Echo/Hello", 5).await;
        assert_eq!(
            ok.backend("authz-server"),
            5,
            "{target} Hello is allowed: {ok}"
        );
        let denied = call(&cp, &py, &client_boot, target, "/echo.Echo/Forbidden", 5).await;
        assert_eq!(
            denied.code("PERMISSION_DENIED"),
            5,
            "{target} Forbidden is denied by the DENY policy: {denied}"
        );
    }

    // Dropping the policy reaches the serving server without a restart.
    write_yaml(dir.path(), &config(port, false)).unwrap();
    cp.reload(dir.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = call(&cp, &py, &client_boot, &direct, "/echo.Echo/Forbidden", 1).await;
        if r.code("OK") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Forbidden still denied 15s after the policy was removed: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
