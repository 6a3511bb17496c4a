//! The mTLS check (gRFC A29): a stock xDS server under a STRICT
//! PeerAuthentication and a stock xDS client under an ISTIO_MUTUAL
//! DestinationRule, both with `file_watcher` certificate providers from
//! `meshctl bootstrap grpc --cert-dir` and SPIFFE certificates from our CA.
//! The server's AuthorizationPolicy allows one principal only, so the
//! check proves the peer identity crossed the handshake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_ca::{files, spiffe::SpiffeId, CaConfig, CertificateAuthority};

use crate::clients::{write_bootstrap, Report, Tool};
use crate::control::{yaml_dir, ControlPlane};
use crate::server_side::free_port;
use crate::HarnessError;

/// Trust domain of the test mesh.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Server, strict mTLS, mutual-TLS clients, and an ALLOW for `authz-client`.
pub fn config(port: u16) -> String {
    format!(
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
  serviceAccount: authz-server
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: strict, namespace: interop}}
spec:
  selector: {{matchLabels: {{app: authz-server}}}}
  mtls: {{mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: authz-server, namespace: interop}}
spec:
  host: authz-server.interop.svc.cluster.local
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: only-authz-client, namespace: interop}}
spec:
  selector: {{matchLabels: {{app: authz-server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/interop/sa/authz-client]}}}}]
"
    )
}

pub(crate) fn ca_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Script {
        script: "mesh-ca".into(),
        message: format!("issuing test certificates: {e}"),
    }
}

/// Writes `cert-chain.pem`, `key.pem` and `root-cert.pem` for service
/// account `sa` of namespace `interop` into `dir/sa`.
pub fn write_identity(
    ca: &CertificateAuthority,
    dir: &Path,
    sa: &str,
) -> Result<PathBuf, HarnessError> {
    write_identity_in(ca, dir, "interop", sa)
}

/// Writes the certificate files of `ns/sa` into `dir/ns-sa`.
pub fn write_identity_in(
    ca: &CertificateAuthority,
    dir: &Path,
    ns: &str,
    sa: &str,
) -> Result<PathBuf, HarnessError> {
    let id = SpiffeId::new(TRUST_DOMAIN, ns, sa).map_err(ca_err)?;
    let cert = ca.issue_local(&id, &[], None).map_err(ca_err)?;
    let out = dir.join(if ns == "interop" {
        sa.to_string()
    } else {
        format!("{ns}-{sa}")
    });
    files::write_workload_files(&out, &cert).map_err(ca_err)?;
    Ok(out)
}

async fn run(
    cp: &ControlPlane,
    tool: &Tool,
    boot: &Path,
    target: &str,
    xds_creds: bool,
) -> Result<Report, HarnessError> {
    let mut args: Vec<String> = ["--target", target, "--count", "5", "--warmup-deadline", "5"]
        .iter()
        .map(ToString::to_string)
        .collect();
    if xds_creds {
        args.push("--xds-creds".into());
    }
    cp.run_checked(tool, boot, &args).await
}

/// `server` runs the xDS server script, `client` the client script.
pub async fn mutual_tls(server: &Tool, client: &Tool) -> Result<(), HarnessError> {
    let (ca, _) =
        CertificateAuthority::new_self_signed(CaConfig::new(TRUST_DOMAIN)).map_err(ca_err)?;
    let port = free_port()?;
    let dir = yaml_dir(&config(port))?;
    let cp = ControlPlane::start(dir.path()).await?;
    let scratch = tempfile::tempdir().map_err(|e| HarnessError::io("creating a temp dir", e))?;
    let boot = |name: &str, sa: &str, labels: &str| -> Result<PathBuf, HarnessError> {
        let certs = write_identity(&ca, scratch.path(), sa)?;
        let certs = certs.display().to_string();
        let mut flags = vec![
            "--namespace",
            "interop",
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
    let server_boot = boot("authz-server", "authz-server", "app=authz-server")?;
    let good_boot = boot("authz-client", "authz-client", "")?;
    let other_boot = boot("intruder", "intruder", "")?;
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

    let meshed = "xds:///authz-server.interop.svc.cluster.local:7070";
    let good = run(&cp, client, &good_boot, meshed, true).await?;
    assert_eq!(
        good.backend("authz-server"),
        5,
        "the allowed principal reaches the server over mTLS: {good}"
    );
    let other = run(&cp, client, &other_boot, meshed, true).await?;
    assert_eq!(
        other.code("PERMISSION_DENIED"),
        5,
        "another principal is refused by the ALLOW policy: {other}"
    );
    let plain = run(&cp, client, &good_boot, &format!("127.0.0.1:{port}"), false).await?;
    assert_eq!(
        plain.code("UNAVAILABLE"),
        5,
        "STRICT refuses a plaintext client: {plain}"
    );
    Ok(())
}
