//! Transparent capture for real: two network namespaces (two "pods") on a
//! veth pair, `mesh-shim iptables` in each, and Python apps that know
//! nothing of the mesh. The client app dials a Service VIP that exists
//! nowhere; its shim catches the connection (`SO_ORIGINAL_DST`), routes it
//! by `Host` over mesh mTLS to the other pod, whose shim catches it on the
//! app's own port and hands it to the app. Needs root (CI runs as root)
//! and iptables (scripts/test.sh installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{Certs, Proc, Shim};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| {
        panic!("{}: {e}; this test needs root, iproute2 and iptables (scripts/test.sh installs iptables)", args.join(" "))
    });
    assert!(
        out.status.success(),
        "{} failed: {}; this test needs root, iproute2 and iptables",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The system's Python: the apps run as an unprivileged user, who cannot
/// reach a per-user install (pyenv under /root).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Two namespaces joined by a veth pair; removed when dropped.
struct Pods {
    a: String,
    b: String,
}

impl Pods {
    fn new() -> Pods {
        let id = std::process::id();
        let (a, b) = (format!("msh-a-{id}"), format!("msh-b-{id}"));
        let (va, vb) = (format!("vma{id}"), format!("vmb{id}"));
        let (va, vb) = (&va[..va.len().min(15)], &vb[..vb.len().min(15)]);
        sh(&["ip", "netns", "add", &a]);
        sh(&["ip", "netns", "add", &b]);
        let pods = Pods {
            a: a.clone(),
            b: b.clone(),
        };
        sh(&["ip", "link", "add", va, "type", "veth", "peer", "name", vb]);
        sh(&["ip", "link", "set", va, "netns", &a]);
        sh(&["ip", "link", "set", vb, "netns", &b]);
        for (ns, dev, ip) in [(&a, va, "10.77.0.1/24"), (&b, vb, "10.77.0.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The Service VIP range is routable (as kube-proxy's would be) but
        // nothing owns the VIP: only capture can answer it.
        sh(&["ip", "-n", &a, "route", "add", "10.96.0.0/16", "dev", va]);
        pods
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const CONFIG: &str = "apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-1, namespace: default}
spec:
  address: 10.77.0.2
  ports: {http: 9080}
  labels: {app: ratings}
  serviceAccount: ratings
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

/// Python's urllib, as an unprivileged user (not the shim's UID), GETting
/// `url` with `Host: host`; prints `STATUS BODY` or `ERR reason`.
fn fetch(pods: &Pods, ns: &str, url: &str, host: &str) -> String {
    let script = format!(
        "import urllib.request,sys\ntry:\n  r=urllib.request.urlopen(urllib.request.Request('{url}', headers={{'Host': '{host}'}}), timeout=3)\n  sys.stdout.write(str(r.status)+' '+r.read().decode())\nexcept Exception as e:\n  sys.stdout.write('ERR '+str(e))\n"
    );
    let out = pods
        .exec(
            ns,
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                SYSTEM_PYTHON,
                "-c",
                &script,
            ],
        )
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn iptables_capture_carries_a_legacy_app_over_mesh_mtls() {
    let pods = Pods::new();
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ratings.txt"), "ratings: 5 stars\n").unwrap();
    // The unprivileged app must read what it serves.
    sh(&["chmod", "-R", "a+rX", dir.path().to_str().unwrap()]);
    let conf = dir.path().join("mesh");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("mesh.yaml"), CONFIG).unwrap();
    let conf = conf.to_str().unwrap().to_string();

    // Pod B: the app on its own port 9080, all interfaces, as in a pod.
    let app = pods
        .exec(
            &pods.b,
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                SYSTEM_PYTHON,
                "-m",
                "http.server",
                "9080",
                "--bind",
                "0.0.0.0",
            ],
        )
        .current_dir(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _app = Proc {
        child: app,
        name: "python http.server in pod B".into(),
    };

    // Before capture: the VIP answers nobody.
    let before = fetch(
        &pods,
        &pods.a,
        "http://10.96.0.10:9080/ratings.txt",
        "ratings:9080",
    );
    assert!(
        before.starts_with("ERR"),
        "the VIP answered without capture: {before}"
    );

    // The shims run as root here, so root is the proxy UID; the apps run
    // as nobody and are captured.
    let bin = env!("CARGO_BIN_EXE_mesh-shim");
    for ns in [&pods.a, &pods.b] {
        let out = pods
            .exec(ns, &[bin, "iptables", "--proxy-uid", "0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mesh-shim iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let b_certs = certs.for_sa("ratings");
    let _b = Shim::start_in(
        &pods.b,
        "ratings",
        &[
            "--config",
            &conf,
            "--labels",
            "app=ratings",
            "--service-account",
            "ratings",
            "--capture-inbound",
            "--cert-dir",
            b_certs.to_str().unwrap(),
        ],
    );
    let a_certs = certs.for_sa("productpage");
    let _a = Shim::start_in(
        &pods.a,
        "productpage",
        &[
            "--config",
            &conf,
            "--labels",
            "app=productpage",
            "--service-account",
            "productpage",
            "--cert-dir",
            a_certs.to_str().unwrap(),
        ],
    );

    // The app dials the VIP; the mesh takes it to ratings.
    let got = fetch(
        &pods,
        &pods.a,
        "http://10.96.0.10:9080/ratings.txt",
        "ratings:9080",
    );
    assert_eq!(got, "200 ratings: 5 stars\n");

    // STRICT: a captured plaintext call straight to pod B's app port is
    // refused by B's shim (the app in A bypasses its own shim for pod IPs
    // only if told to; here A's shim passes unknown hosts through as
    // plaintext, which B refuses).
    let direct = fetch(
        &pods,
        &pods.a,
        "http://10.77.0.2:9080/ratings.txt",
        "10.77.0.2:9080",
    );
    assert!(
        direct.starts_with("ERR") || direct.starts_with("503"),
        "plaintext reached a STRICT pod: {direct}"
    );

    // Pod B's shim saw productpage's identity over mutual TLS, on the
    // app's port 9080 (not the capture port).
    let metrics = fetch(
        &pods,
        &pods.b,
        "http://127.0.0.1:15020/stats/prometheus",
        "x",
    );
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
        .unwrap_or_else(|| panic!("no destination series: {metrics}"));
    assert!(
        line.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\""),
        "{line}"
    );
    assert!(
        line.contains("connection_security_policy=\"mutual_tls\""),
        "{line}"
    );
    assert!(
        line.contains("destination_service=\"ratings.default.svc.cluster.local\""),
        "{line}"
    );
}
