//! Running the real `mesh-shim` binary and a real legacy app (Python's
//! stdlib `http.server`, no mesh code in it) on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mesh_ca::files::write_workload_files;
use mesh_test_support::identity::{ca_in, issue};

/// A port free right now (the shim binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

impl Proc {
    /// Sends SIGTERM (through `kill`, as an orchestrator would).
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", self.name);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "{} still running after {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// A running `mesh-shim run`, with the addresses it printed.
pub struct Shim {
    pub proc: Proc,
    pub addrs: BTreeMap<String, Vec<SocketAddr>>,
    pub lines: mpsc::Receiver<String>,
}

impl Shim {
    /// Starts `mesh-shim run ARGS` (ports default to 0 unless given) and
    /// waits for it to say it is ready.
    pub fn start(name: &str, args: &[&str]) -> Shim {
        Self::try_start(name, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Shim::start`], but returns what the shim printed when it
    /// exits before being ready.
    pub fn try_start(name: &str, args: &[&str]) -> Result<Shim, String> {
        Self::launch(name, &[], args, true)
    }

    /// Starts `mesh-shim run ARGS` inside network namespace `ns`, on
    /// Istio's ports (a namespace is a pod: nothing else binds them).
    pub fn start_in(ns: &str, name: &str, args: &[&str]) -> Shim {
        Self::launch(name, &["ip", "netns", "exec", ns], args, false)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch(
        name: &str,
        prefix: &[&str],
        args: &[&str],
        loopback_ports: bool,
    ) -> Result<Shim, String> {
        let mut full: Vec<&str> = prefix.iter().skip(1).copied().collect();
        full.extend([env!("CARGO_BIN_EXE_mesh-shim"), "run"]);
        let defaults: &[(&str, &str)] = if loopback_ports {
            &[
                ("--outbound-port", "0"),
                ("--admin-port", "0"),
                ("--metrics-port", "0"),
                ("--ready-port", "0"),
                ("--inbound-port", "0"),
                ("--inbound-addr", "127.0.0.1"),
            ]
        } else {
            &[]
        };
        for (flag, default) in defaults.iter().copied() {
            if !args.contains(&flag) {
                full.extend([flag, default]);
            }
        }
        full.extend(args);
        let program = match prefix.first() {
            Some(p) => *p,
            None => full.remove(0),
        };
        let mut child = Command::new(program)
            .args(&full)
            .env("MESH_SHIM_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let tag = name.to_string();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
                let _ = tx2.send(l);
            }
        });
        let mut proc = Proc {
            child,
            name: name.into(),
        };
        let mut addrs: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix("mesh-shim: ") {
                        if let Some((role, addr)) = rest.split_once(" listening on ") {
                            addrs
                                .entry(role.to_string())
                                .or_default()
                                .push(addr.parse().unwrap());
                        }
                        if rest == "ready" {
                            return Ok(Shim {
                                proc,
                                addrs,
                                lines: rx,
                            });
                        }
                    }
                    seen.push(l);
                }
                Err(_) => {
                    if let Some(status) = proc.child.try_wait().unwrap() {
                        std::thread::sleep(Duration::from_millis(100));
                        seen.extend(rx.try_iter());
                        return Err(format!(
                            "{name} exited with {status} before ready:\n{}",
                            seen.join("\n")
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("{name} not ready after 30 s:\n{}", seen.join("\n")));
                    }
                }
            }
        }
    }

    /// The address of the listener `role` (the first, for `upstream`).
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.addrs[role][0]
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
