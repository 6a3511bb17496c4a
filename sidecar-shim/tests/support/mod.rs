//! Running the real `mesh-shim` binary and a real legacy app (Python's
//! stdlib `http.server`, no mesh code in it) on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_ca::files::write_workload_files;
use mesh_test_support::identity::{ca_in, issue};
use sidecar_shim::launch::{Launch, Running};

/// A port free right now, for a listener started a moment later. Taken
/// below the kernel's ephemeral range (32768 and up), so no `:0` bind of a
/// test running beside this one can take it in between, and never handed
/// out twice in one test binary.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // A different start per test binary (they may run at once under
    // nextest), spread over 20000..32000.
    let base = 20000 + (std::process::id() % 600) as u16 * 20;
    for _ in 0..12000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (base - 20000 + n) % 12000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// The mesh CA of a test and the certificate directories it wrote.
pub struct Certs {
    pub dir: tempfile::TempDir,
    ca: mesh_ca::CertificateAuthority,
}

impl Certs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_in(&dir.path().join("ca"), "cluster.local");
        Certs { dir, ca }
    }

    /// `cert-chain.pem`, `key.pem`, `root-cert.pem` for service account
    /// `sa` in `default`.
    pub fn for_sa(&self, sa: &str) -> PathBuf {
        let out = self.dir.path().join(sa);
        std::fs::create_dir_all(&out).unwrap();
        write_workload_files(&out, &issue(&self.ca, sa)).unwrap();
        out
    }

    /// A certificate for `sa`, in memory.
    pub fn cert(&self, sa: &str) -> mesh_ca::WorkloadCertificate {
        issue(&self.ca, sa)
    }

    /// The roots peers trust.
    pub fn bundle(&self) -> mesh_ca::TrustBundle {
        self.cert("probe").trust_bundle().clone()
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's `http.server` serving `root` on 127.0.0.1.
pub fn python_app(root: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 must be on PATH: the legacy app is Python's http.server");
    let proc = Proc {
        child,
        name: "python http.server".into(),
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "python http.server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, port)
}

/// A running `mesh-shim run` (the library's launcher), killed on drop.
pub struct Shim {
    pub proc: Running,
}

impl Shim {
    /// Starts `mesh-shim run ARGS` (ports default to 0 on loopback unless
    /// given) and waits for it to say it is ready.
    pub fn start(name: &str, args: &[&str]) -> Shim {
        Self::try_start(name, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Shim::start`], but returns what the shim printed when it
    /// exits before being ready.
    pub fn try_start(name: &str, args: &[&str]) -> Result<Shim, String> {
        let mut launch = Launch::new(name, env!("CARGO_BIN_EXE_mesh-shim")).args(args);
        for (flag, default) in [
            ("--outbound-port", "0"),
            ("--admin-port", "0"),
            ("--metrics-port", "0"),
            ("--ready-port", "0"),
            ("--inbound-port", "0"),
            ("--inbound-addr", "127.0.0.1"),
        ] {
            if !launch.has(flag) {
                launch = launch.args(&[flag, default]);
            }
        }
        Ok(Shim {
            proc: launch.start()?,
        })
    }

    /// Starts `mesh-shim run ARGS` inside network namespace `ns`, on
    /// Istio's ports (a namespace is a pod: nothing else binds them).
    pub fn start_in(ns: &str, name: &str, args: &[&str]) -> Shim {
        let launch = Launch::new(name, env!("CARGO_BIN_EXE_mesh-shim"))
            .inside(&["ip", "netns", "exec", ns])
            .args(args);
        Shim {
            proc: launch.start().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The address of the listener `role` (the first, for `upstream`).
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.proc.addr(role)
    }
}

/// A GET through plain HTTP/1.1 to `addr` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> mesh_test_support::raw_http::Reply {
    mesh_test_support::raw_http::plain(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends `raw` to `addr` as it is.
pub async fn raw(addr: SocketAddr, raw: &str) -> mesh_test_support::raw_http::Reply {
    mesh_test_support::raw_http::plain(addr, raw).await
}
