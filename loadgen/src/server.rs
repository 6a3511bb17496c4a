//! The control plane under load, as a child process: meshd
//! (`meshd --config DIR`, or `meshd --source kubernetes` on an API
//! server) or istiod (`pilot-discovery discovery
//! --registries= --configDir=DIR`, run the way tests/src/istiod.rs runs
//! it: plaintext xDS on a free loopback port, no CA, no Kubernetes), its
//! readiness, and its RSS and CPU read from `/proc/<pid>`.
//!
//! Not here: the clients, or deciding when to sample.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::LoadError;

/// Which control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ours.
    Meshd,
    /// istiod's pilot-discovery.
    Istiod,
}

impl Kind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Meshd => "meshd",
            Kind::Istiod => "istiod",
        }
    }
}

/// Longest a server may take to become ready (see [`Server::start`]).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a control plane reads its config.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A directory of YAML (both meshd and istiod).
    Files(&'a Path),
    /// A Kubernetes API server, through a kubeconfig file (meshd only:
    /// `--source kubernetes`, namespace `istio-system`, no webhook and no
    /// TLS xDS port).
    Kubernetes {
        /// The kubeconfig file.
        kubeconfig: &'a Path,
    },
}

/// istiod's log line once it serves xDS.
const ISTIOD_READY: &str = "marking server ready";

/// One `/proc` reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident set (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set so far (VmHWM), KiB.
    pub hwm_kib: u64,
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on
/// every Linux architecture this runs on).
const TICKS_PER_S: f64 = 100.0;

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
pub fn sample(pid: u32) -> Result<Sample, LoadError> {
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path)
        .map_err(|e| LoadError::io(format!("reading {status_path}"), e))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    if !status.contains("VmRSS:") {
        // A zombie (killed, not yet reaped) has no memory to report.
        return Err(LoadError::Server(format!("process {pid} has exited")));
    }
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path)
        .map_err(|e| LoadError::io(format!("reading {stat_path}"), e))?;
    // Fields after the command name (which may hold spaces) in parens:
    // state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu_s: (tick(14) + tick(15)) as f64 / TICKS_PER_S,
    })
}

/// A running control plane; dropping it kills the process.
pub struct Server {
    kind: Kind,
    child: Child,
    pid: u32,
    xds: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    ready_after: Duration,
    _scratch: tempfile::TempDir,
}

fn free_port() -> Result<u16, LoadError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| LoadError::io("binding a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LoadError::io("reading a free port", e))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Server {
    /// Starts `kind` from binary `bin` on the YAML in `dir`, with extra
    /// environment variables `env` (e.g. istiod's
    /// `PILOT_MAX_REQUESTS_PER_SECOND`), and waits until it serves xDS.
    pub async fn start(
        kind: Kind,
        bin: &Path,
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<Self, LoadError> {
        Self::start_from(kind, bin, Source::Files(dir), env, READY_TIMEOUT).await
    }

    /// Starts `kind` from binary `bin` on `source` with extra environment
    /// `env`, and waits (at most `ready_within`) until it is ready and
    /// serves xDS; [`Server::ready_after`] says how long that took.
    pub async fn start_from(
        kind: Kind,
        bin: &Path,
        source: Source<'_>,
        env: &[(String, String)],
        ready_within: Duration,
    ) -> Result<Self, LoadError> {
        let scratch = tempfile::tempdir().map_err(|e| LoadError::io("creating a temp dir", e))?;
        let log = scratch.path().join(format!("{}.log", kind.name()));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| LoadError::io(format!("creating {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| LoadError::io("duplicating the log handle", e))?;
        let xds = loopback(free_port()?);
        let http = loopback(free_port()?);
        let mut cmd = Command::new(bin);
        let dir = match (kind, source) {
            (_, Source::Files(dir)) => dir,
            (Kind::Meshd, Source::Kubernetes { kubeconfig }) => {
                cmd.args(["--source", "kubernetes", "--kube-namespace"])
                    .arg(crate::kube::SYSTEM_NAMESPACE)
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["--webhook-addr", "off"]);
                scratch.path()
            }
            (Kind::Istiod, Source::Kubernetes { .. }) => {
                return Err(LoadError::Server(
                    "istiod is only run on files here (--registries= --configDir=DIR)".into(),
                ))
            }
        };
        match kind {
            Kind::Meshd => {
                if let Source::Files(dir) = source {
                    cmd.arg("--config").arg(dir);
                }
                cmd.arg("--xds-addr")
                    .arg(xds.to_string())
                    .arg("--http-addr")
                    .arg(http.to_string())
                    // Load runs measure plaintext ADS; no fixed TLS port to collide on.
                    .arg("--secure-xds-addr")
                    .arg("off")
                    .env("RUST_LOG", "warn");
            }
            Kind::Istiod => {
                let mesh = scratch.path().join("mesh.yaml");
                std::fs::write(&mesh, crate::istiod::MESH_CONFIG)
                    .map_err(|e| LoadError::io(format!("writing {}", mesh.display()), e))?;
                let ports = crate::istiod::Ports {
                    xds,
                    http,
                    monitoring: loopback(free_port()?),
                    ctrlz: free_port()?,
                };
                // istiod's defaults (100ms / 10s), spelled out.
                crate::istiod::configure(
                    &mut cmd,
                    dir,
                    &mesh,
                    scratch.path(),
                    &ports,
                    "istiod-load",
                    ("100ms", "10s"),
                );
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| LoadError::io(format!("starting {}", bin.display()), e))?;
        let pid = child
            .id()
            .ok_or_else(|| LoadError::Server(format!("{} exited at once", kind.name())))?;
        let mut me = Self {
            kind,
            child,
            pid,
            xds,
            http,
            log,
            ready_after: Duration::ZERO,
            _scratch: scratch,
        };
        me.wait_ready(spawned + ready_within).await?;
        me.ready_after = spawned.elapsed();
        Ok(me)
    }

    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), LoadError> {
        let within = deadline.saturating_duration_since(Instant::now());
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(format!("exited with {status} before it was ready")));
            }
            let ready = matches!(http_get(self.http, "/ready").await, Some(200))
                || (self.kind == Kind::Istiod && self.log_text().contains(ISTIOD_READY));
            if ready && tokio::net::TcpStream::connect(self.xds).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failure(format!("not ready within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn failure(&self, what: String) -> LoadError {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        LoadError::Server(format!(
            "{} {what}; the last lines of its log ({}):\n{tail}",
            self.kind.name(),
            self.log.display()
        ))
    }

    /// Where clients reach plaintext ADS.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// From starting the process until it was ready (`/ready` answered
    /// 200, or istiod's ready line) and its xDS port accepted a
    /// connection.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Where its stdout and stderr go (removed when it is dropped).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Lines of its log that contain `needle` (e.g. istiod's `ACK ERROR`).
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Kills it and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `GET path` on `addr`: the status code, if any answer came.
async fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .ok()
        .flatten()
}
