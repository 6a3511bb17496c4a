//! `mesh-shim agent` (the binary) against a real meshd on loopback: it
//! gets the workload certificate from meshd's CA with a bootstrap token,
//! writes `cert-chain.pem`, `key.pem`, `root-cert.pem` and the gRPC xDS
//! bootstrap naming meshd's TLS port and those files, turns ready, and
//! exits on SIGTERM; with a token the CA refuses it never turns ready and
//! says what to check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_ca::bundle::Usage;
use mesh_ca::files::read_workload_files;
use mesh_ca::TrustBundle;
use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_xds::node::{node_from_json, NodeInfo};
use rustls_pki_types::UnixTime;
use sidecar_shim::launch::{Launch, Running};

const TOKEN: &str = "token-cart-0123456789abcdef";

async fn meshd(dir: &Path) -> MeshdHandle {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        format!(
            r#"{{"tokens":[{{"token":"{TOKEN}","namespace":"shop","serviceAccount":"cart"}}]}}"#
        ),
    )
    .unwrap();
    let mut c = MeshdConfig::new(&conf);
    c.ca_tokens = Some(tokens);
    Meshd::start(c).await.expect("meshd starts")
}

struct Paths {
    token: PathBuf,
    bootstrap: PathBuf,
    certs: PathBuf,
}

fn paths(dir: &Path, token: &str) -> Paths {
    let f = dir.join("istio-token");
    std::fs::write(&f, format!("{token}\n")).unwrap();
    Paths {
        token: f,
        bootstrap: dir.join("proxy/grpc-bootstrap.json"),
        certs: dir.join("data"),
    }
}

/// Starts `mesh-shim agent` for `shop/cart` against `meshd`'s TLS port.
async fn agent(meshd: &MeshdHandle, p: &Paths, timeout: &str) -> Result<Running, String> {
    let tls = meshd.secure_xds_addr().unwrap().to_string();
    let args: Vec<String> = [
        "--xds-addr",
        &format!("https://{tls}"),
        "--ca-addr",
        &tls,
        "--ca-root",
        &meshd.root_cert_file().display().to_string(),
        "--ca-token-file",
        &p.token.display().to_string(),
        "--namespace",
        "shop",
        "--service-account",
        "cart",
        "--labels",
        "app=cart,version=v1",
        "--pod-name",
        "cart-7d9-x",
        "--instance-ip",
        "10.1.2.3",
        "--workload-name",
        "cart",
        "--bootstrap-file",
        &p.bootstrap.display().to_string(),
        "--cert-dir",
        &p.certs.display().to_string(),
        "--ready-addr",
        "127.0.0.1",
        "--ready-port",
        "0",
        "--ready-timeout",
        timeout,
    ]
    .map(str::to_string)
    .to_vec();
    tokio::task::spawn_blocking(move || {
        Launch::new("agent", env!("CARGO_BIN_EXE_mesh-shim"))
            .agent()
            .args(&args)
            .timeout(Duration::from_secs(30))
            .start()
    })
    .await
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_agent_writes_the_bootstrap_and_a_certificate_from_meshd() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let meshd = meshd(dir.path()).await;
        let p = paths(dir.path(), TOKEN);
        let mut running = agent(&meshd, &p, "20s").await.unwrap();

        // Ready only now that both are on disk.
        let ready = mesh_test_support::raw_http::plain(
            running.addr("ready"),
            "GET /healthz/ready HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(ready.status, 200, "{}", ready.body);

        // The certificate: shop/cart's SPIFFE identity, chained to meshd's root.
        let cert = read_workload_files(&p.certs).unwrap();
        assert_eq!(
            cert.identity().to_string(),
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        let roots = TrustBundle::from_pem(&meshd.root_cert_pem(), "meshd root").unwrap();
        roots
            .verify(
                cert.leaf(),
                &cert.chain()[1..],
                UnixTime::now(),
                Usage::ClientAuth,
            )
            .unwrap();
        let root_file = std::fs::read_to_string(p.certs.join("root-cert.pem")).unwrap();
        assert_eq!(
            TrustBundle::from_pem(&root_file, "root-cert.pem")
                .unwrap()
                .roots(),
            roots.roots()
        );

        // The bootstrap: meshd's TLS port over TLS with the files, the
        // file_watcher provider on the same files, the node as given.
        let text = std::fs::read_to_string(&p.bootstrap).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let server = &doc["xds_servers"][0];
        assert_eq!(
            server["server_uri"],
            meshd.secure_xds_addr().unwrap().to_string()
        );
        assert_eq!(server["channel_creds"][0]["type"], "tls");
        let provider = &doc["certificate_providers"]["default"];
        assert_eq!(provider["plugin_name"], "file_watcher");
        for (key, file) in [
            ("certificate_file", "cert-chain.pem"),
            ("private_key_file", "key.pem"),
            ("ca_certificate_file", "root-cert.pem"),
        ] {
            let named = provider["config"][key].as_str().unwrap();
            assert_eq!(Path::new(named), p.certs.join(file));
            assert!(Path::new(named).is_file(), "{named}");
            assert_eq!(server["channel_creds"][0]["config"][key], named);
        }
        assert_eq!(
            doc["server_listener_resource_name_template"],
            "xds.istio.io/grpc/lds/inbound/%s"
        );
        let node = NodeInfo::from_node(&node_from_json(&doc["node"]));
        assert_eq!(
            node.id,
            "sidecar~10.1.2.3~cart-7d9-x.shop~shop.svc.cluster.local"
        );
        assert_eq!(node.namespace.as_deref(), Some("shop"));
        assert_eq!(node.service_account.as_deref(), Some("cart"));
        assert_eq!(node.labels.get("version").map(String::as_str), Some("v1"));
        assert!(node.proxyless_grpc);

        running.terminate().unwrap();
        assert!(running
            .wait_exit(Duration::from_secs(10))
            .unwrap()
            .success());
        meshd.shutdown().await;
    });
}

#[test]
fn a_refused_token_never_turns_ready_and_says_what_to_check() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let meshd = meshd(dir.path()).await;
        let p = paths(dir.path(), "token-nobody-0123456789abcdef");
        let err = agent(&meshd, &p, "2s").await.unwrap_err();
        assert!(
            err.contains("no certificate within") && err.contains("token"),
            "{err}"
        );
        assert!(!p.bootstrap.exists());
        meshd.shutdown().await;
    });
}
