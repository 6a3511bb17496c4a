//! meshctl as an operator runs it: the real binary on the sample configs in
//! `examples/`, checking output and exit status.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failures

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("meshctl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn analyze_healthy_sample_exits_zero() {
    let o = meshctl(&["analyze", "examples/bookinfo"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("0 errors"), "{out}");
    // The deny-by-default policy is reported as information, not a problem.
    assert!(out.contains("[authz-deny-all]"), "{out}");
}

#[test]
fn analyze_mistakes_exits_one_with_codes_in_json() {
    let o = meshctl(&["analyze", "--output", "json", "examples/mistakes"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    let findings = v["findings"].as_array().expect("findings array");
    let codes: Vec<&str> = findings.iter().filter_map(|f| f["code"].as_str()).collect();
    for expected in [
        "vs-unknown-subset",
        "vs-fault-with-retry",
        "vs-timeout-below-retries",
        "dr-ejects-all",
        "dr-tls-mesh-host",
        "authz-deny-paths-unnormalized",
        "authz-allow-all-rule",
        "workload-uid-1337",
    ] {
        assert!(
            codes.contains(&expected),
            "{expected} missing from {codes:?}"
        );
    }
    for f in findings {
        for key in ["code", "severity", "resource", "file", "message"] {
            assert!(f.get(key).is_some(), "finding without {key}: {f}");
        }
    }
}

#[test]
fn analyze_reports_invalid_yaml_with_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n  htp: []\n",
    )
    .expect("write");
    let o = meshctl(&["analyze", file.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("[config-invalid]"), "{out}");
    assert!(out.contains("bad.yaml:7"), "{out}");
    assert!(out.contains("spec.htp"), "{out}");
}

#[test]
fn analyze_unreadable_path_exits_two() {
    let o = meshctl(&["analyze", "does/not/exist"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does/not/exist"));
    let o = meshctl(&["analyze", "--output", "yaml", "examples/bookinfo"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn route_header_match_goes_to_v2() {
    let o = meshctl(&[
        "x",
        "route",
        "--config",
        "examples/bookinfo",
        "--host",
        "reviews",
        "--port",
        "9080",
        "--path",
        "/reviews/0",
        "-H",
        "end-user: jason",
        "--source-namespace",
        "bookinfo",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["virtual_service"], "bookinfo/reviews");
    assert_eq!(v["route_index"], 0);
    assert_eq!(v["route_name"], "jason-to-v2");
    let d = v["destinations"].as_array().expect("destinations");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["host"], "reviews.bookinfo.svc.cluster.local");
    assert_eq!(d[0]["subset"], "v2");
    assert_eq!(d[0]["weight"], 100);
}

#[test]
fn route_default_split_and_policies() {
    let o = meshctl(&[
        "x",
        "route",
        "--config",
        "examples/bookinfo",
        "--host",
        "reviews.bookinfo.svc.cluster.local",
        "--port",
        "9080",
        "--path",
        "/reviews/0",
        "--source-namespace",
        "bookinfo",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["route_index"], 1);
    let d = v["destinations"].as_array().expect("destinations");
    let weights: Vec<(String, i64)> = d
        .iter()
        .map(|x| {
            (
                x["subset"].as_str().unwrap_or_default().to_string(),
                x["weight"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(weights, vec![("v1".into(), 90), ("v2".into(), 10)]);
    assert!(!v["timeout"].is_null(), "{v}");
    assert!(!v["retries"].is_null(), "{v}");
}

#[test]
fn route_without_virtual_service_goes_to_the_service() {
    let o = meshctl(&[
        "x",
        "route",
        "--config",
        "examples/bookinfo",
        "--host",
        "details",
        "--port",
        "9090",
        "--source-namespace",
        "bookinfo",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert!(v["virtual_service"].is_null());
    assert_eq!(
        v["destinations"][0]["host"],
        "details.bookinfo.svc.cluster.local"
    );
    assert_eq!(v["destinations"][0]["weight"], 100);
}

fn authz(extra: &[&str]) -> Value {
    let mut args = vec![
        "x",
        "authz",
        "--config",
        "examples/bookinfo",
        "--workload",
        "bookinfo/reviews-v1",
        "--labels",
        "app=reviews,version=v1",
        "--port",
        "9080",
    ];
    args.extend_from_slice(extra);
    let o = meshctl(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    json(&o)
}

#[test]
fn authz_allows_the_expected_caller() {
    let v = authz(&[
        "--method",
        "GET",
        "--path",
        "/reviews/0",
        "--principal",
        "cluster.local/ns/bookinfo/sa/bookinfo-productpage",
    ]);
    assert_eq!(v["decision"], "ALLOW", "{v}");
    assert_eq!(v["policy"], "bookinfo/reviews-from-productpage");
    assert_eq!(v["rule_index"], 0);
}

#[test]
fn authz_denies_other_callers_and_plaintext() {
    let v = authz(&[
        "--method",
        "GET",
        "--path",
        "/reviews/0",
        "--principal",
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings",
    ]);
    assert_eq!(v["decision"], "DENY", "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let v = authz(&["--method", "GET", "--path", "/reviews/0", "--plaintext"]);
    assert_eq!(v["decision"], "DENY", "{v}");
    let v = authz(&[
        "--method",
        "DELETE",
        "--path",
        "/reviews/0",
        "--principal",
        "cluster.local/ns/bookinfo/sa/bookinfo-productpage",
    ]);
    assert_eq!(v["decision"], "DENY", "{v}");
}

#[test]
fn authz_shows_what_a_stock_grpc_server_decides_and_why() {
    // An ALLOW rule on a JWT principal: the SDK allows a request with the
    // token, a stock gRPC server (no JWT validation) cannot, and says so;
    // grpc-js-xds additionally cannot evaluate IP blocks.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt-or-lan, namespace: shop}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer/*"]}}]
  - from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]
"#,
    )
    .expect("write");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "x",
            "authz",
            "--config",
            dir.path().to_str().expect("utf8"),
            "--workload",
            "shop/cart",
            "--port",
            "8080",
            "--path",
            "/cart",
        ];
        args.extend_from_slice(extra);
        let o = meshctl(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        json(&o)
    };
    let v = run(&["--request-principal", "https://issuer/alice"]);
    assert_eq!(v["decision"], "ALLOW", "{v}");
    let stock = &v["stock_grpc_server"];
    assert_eq!(stock["server"], "grpc");
    assert_eq!(stock["decision"], "DENY", "{v}");
    assert_eq!(stock["exact"], false);
    let notes = stock["notes"].to_string();
    assert!(notes.contains("shop/jwt-or-lan rule 0 dropped"), "{notes}");
    assert!(notes.contains("requestPrincipals"), "{notes}");

    let lan = run(&["--source-ip", "10.1.2.3"]);
    assert_eq!(lan["decision"], "ALLOW");
    assert_eq!(lan["stock_grpc_server"]["decision"], "ALLOW");
    let js = run(&["--source-ip", "10.1.2.3", "--stock-server", "grpc-js"]);
    assert_eq!(js["stock_grpc_server"]["server"], "grpc-js");
    assert_eq!(js["stock_grpc_server"]["decision"], "DENY", "{js}");
    assert!(js["stock_grpc_server"]["notes"]
        .to_string()
        .contains("dual-stack"));
}

#[test]
fn bootstrap_grpc_points_a_proxyless_client_at_meshd() {
    let o = meshctl(&[
        "bootstrap",
        "grpc",
        "--xds-addr",
        "127.0.0.1:15010",
        "--namespace",
        "shop",
        "--labels",
        "app=cart,version=v1",
        "--service-account",
        "cart",
        "--cert-dir",
        "/var/run/mesh",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["xds_servers"][0]["server_uri"], "127.0.0.1:15010");
    assert_eq!(v["xds_servers"][0]["server_features"][0], "xds_v3");
    assert_eq!(
        v["node"]["id"],
        "sidecar~127.0.0.1~grpc-workload.shop~shop.svc.cluster.local"
    );
    let meta = &v["node"]["metadata"];
    assert_eq!(meta["NAMESPACE"], "shop");
    assert_eq!(meta["LABELS"]["app"], "cart");
    assert_eq!(meta["SERVICE_ACCOUNT"], "cart");
    assert_eq!(meta["GENERATOR"], "grpc");
    assert_eq!(
        v["server_listener_resource_name_template"],
        "xds.istio.io/grpc/lds/inbound/%s"
    );
    let provider = &v["certificate_providers"]["default"];
    assert_eq!(provider["plugin_name"], "file_watcher");
    assert_eq!(
        provider["config"]["certificate_file"],
        "/var/run/mesh/cert-chain.pem"
    );
    assert_eq!(
        provider["config"]["ca_certificate_file"],
        "/var/run/mesh/root-cert.pem"
    );
    let plain = meshctl(&["bootstrap", "grpc", "--namespace", "shop"]);
    assert!(json(&plain).get("certificate_providers").is_none());
}

#[test]
fn install_prints_the_manifests_and_writes_files() {
    let o = meshctl(&["install", "--namespace", "mesh", "--image", "meshd:test"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let opts = meshctl::install::InstallOptions {
        namespace: "mesh".into(),
        image: "meshd:test".into(),
        ..Default::default()
    };
    assert_eq!(stdout(&o), meshctl::install::render(&opts));

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("manifests");
    let o = meshctl(&[
        "install",
        "--crds-only",
        "--output",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let files: Vec<String> = std::fs::read_dir(&out)
        .expect("written")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["crds.yaml"]);

    let o = meshctl(&["install", "--namespace", "Not_A_Name"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid namespace name"));
}
