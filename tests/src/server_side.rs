//! The server-side check: a stock xDS gRPC server (gRFC A36) gets its
//! inbound listener and RBAC filters from our control plane, enforces an
//! AuthorizationPolicy that denies one method, and picks up the policy's
//! removal while serving. Called directly and through the mesh (an xDS
//! client resolving the server's Kubernetes Service).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::clients::{write_bootstrap, Report, Tool};
use crate::control::{write_yaml, yaml_dir, ControlPlane};
use crate::HarnessError;

/// The server's Service, WorkloadEntry and (with `deny`) the policy.
pub fn config(port: u16, deny: bool) -> String {
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

/// A port free on 127.0.0.1 right now. gRPC xDS servers name their
/// listener after the port they bind, so it must be known (and in the
/// YAML) before the server starts. Never handed out twice in a process,
/// and taken below the kernel's ephemeral range: the harness picks every
/// workload's port before it starts istiod, whose own ports come from here
/// too, and a port picked but not yet bound must not be picked again (a
/// server that lost its port to istiod answered every call UNIMPLEMENTED).
pub fn free_port() -> Result<u16, HarnessError> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 600) as u16 * 20;
    for _ in 0..12000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (start + n) % 12000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::io(
        "finding a free port on 127.0.0.1 in 20000..32000",
        std::io::Error::other("every port is taken"),
    ))
}

async fn call(
    cp: &ControlPlane,
    tool: &Tool,
    boot: &Path,
    target: &str,
    method: &str,
    n: u32,
) -> Result<Report, HarnessError> {
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
    cp.run_checked(tool, boot, &args).await
}

/// `server` runs the xDS server script, `client` the client script.
pub async fn authorization_policy(server: &Tool, client: &Tool) -> Result<(), HarnessError> {
    let port = free_port()?;
    let dir = yaml_dir(&config(port, true))?;
    let cp = ControlPlane::start(dir.path()).await?;
    let scratch = tempfile::tempdir().map_err(|e| HarnessError::io("creating a temp dir", e))?;
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
    )?;
    let client_boot = write_bootstrap(
        scratch.path(),
        "client",
        cp.xds_addr(),
        &["--namespace", "interop", "--workload-name", "authz-client"],
    )?;
    let _server = server
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
        .await?;

    let direct = format!("127.0.0.1:{port}");
    let meshed = "xds:///authz-server.interop.svc.cluster.local:7070".to_string();
    for target in [&direct, &meshed] {
        let ok = call(&cp, client, &client_boot, target, "/echo.Echo/Hello", 5).await?;
        assert_eq!(
            ok.backend("authz-server"),
            5,
            "{target} Hello is allowed: {ok}"
        );
        let denied = call(&cp, client, &client_boot, target, "/echo.Echo/Forbidden", 5).await?;
        assert_eq!(
            denied.code("PERMISSION_DENIED"),
            5,
            "{target} Forbidden is denied by the DENY policy: {denied}"
        );
    }

    // The short name a client in the same namespace dials resolves too.
    let short = call(
        &cp,
        client,
        &client_boot,
        "xds:///authz-server:7070",
        "/echo.Echo/Hello",
        2,
    )
    .await?;
    assert_eq!(
        short.backend("authz-server"),
        2,
        "xds:///authz-server:7070 from namespace interop: {short}"
    );

    // Dropping the policy reaches the serving server without a restart.
    write_yaml(dir.path(), &config(port, false))?;
    cp.reload(dir.path()).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = call(
            &cp,
            client,
            &client_boot,
            &direct,
            "/echo.Echo/Forbidden",
            1,
        )
        .await?;
        if r.code("OK") == 1 {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "Forbidden still denied 15s after the policy was removed: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
