//! istiod as a reference control plane: the real `pilot-discovery` built
//! from the `istio.io/istio` Go module by `scripts/istiod.sh`, run without
//! Kubernetes on a directory of Istio YAML (`discovery --registries=
//! --configDir=DIR`), plaintext xDS on a free loopback port, no CA.
//!
//! The differential test (`tests/tests/istiod_diff.rs`) feeds it the same
//! directory as meshd ([`crate::ControlPlane`]) and compares what stock
//! clients, stock servers and our xDS client make of each.
//!
//! A missing binary is an error naming the command that builds it: a test
//! that needs istiod fails without it, never skips.
//!
//! Not here: any comparison logic (that lives in the test), and anything
//! Kubernetes (istiod's file source reads Istio kinds only: `ServiceEntry`
//! and `WorkloadEntry` stand in for `Service` and pods).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::clients::{Report, Tool};
use crate::scenario::RUN_TIMEOUT;
use crate::server_side::free_port;
use crate::HarnessError;

/// The `istio.io/istio` module version `scripts/istiod.sh` builds by
/// default (istio publishes pseudo-versions of master only).
pub const VERSION: &str = "v0.0.0-20260827124520-eed52ebb66ad";

/// The command that builds the binary (run from the repository root).
pub const BUILD_COMMAND: &str = "scripts/istiod.sh";

/// Environment variable naming a `pilot-discovery` binary to use instead
/// of the cached build.
pub const BIN_ENV: &str = "MESH_ISTIOD_BIN";

/// What istiod logs once its caches are synced and it serves xDS.
const READY_LOG_LINE: &str = "marking server ready";

/// What istiod logs when a client NACKs (`pkg/xds/server.go`).
const NACK_LOG_LINE: &str = "ACK ERROR";

/// Longest istiod may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `scripts/istiod.sh` puts the binary:
/// `${MESH_PEER_CACHE:-$HOME/.cache/mesh-peers}/istiod/VERSION/pilot-discovery`.
pub fn cached_binary() -> PathBuf {
    let root = std::env::var_os("MESH_PEER_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("mesh-peers"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache/mesh-peers"));
    root.join("istiod").join(VERSION).join("pilot-discovery")
}

/// The `pilot-discovery` binary: `$MESH_ISTIOD_BIN`, else the cached build.
/// Missing, it is an error that says how to build it.
pub fn binary() -> Result<PathBuf, HarnessError> {
    existing(std::env::var_os(BIN_ENV).map_or_else(cached_binary, PathBuf::from))
}

fn existing(path: PathBuf) -> Result<PathBuf, HarnessError> {
    if path.is_file() {
        return Ok(path);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."));
    Err(HarnessError::Script {
        script: "istiod".into(),
        message: format!(
            "istiod's pilot-discovery is not at {}; build it with `{}` (run in {}; needs Go >= 1.26 \
             and the Go module proxy; a cold build takes about 10 minutes on 2 cores), or point \
             {BIN_ENV} at a pilot-discovery binary",
            path.display(),
            BUILD_COMMAND,
            repo.display(),
        ),
    })
}

/// A running istiod; dropping it kills the process.
pub struct Istiod {
    child: Child,
    xds: SocketAddr,
    http: SocketAddr,
    monitoring: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    _scratch: tempfile::TempDir,
}

impl std::fmt::Debug for Istiod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Istiod")
            .field("xds", &self.xds)
            .field("http", &self.http)
            .field("monitoring", &self.monitoring)
            .field("dir", &self.dir)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Istiod {
    /// Starts istiod on the Istio YAML in `dir` (plaintext xDS, HTTP and
    /// monitoring on free loopback ports; no CA, no webhook, no Kubernetes)
    /// and waits until it serves xDS.
    pub async fn start(dir: &Path) -> Result<Self, HarnessError> {
        let bin = binary()?;
        let scratch =
            tempfile::tempdir().map_err(|e| HarnessError::io("creating a temp dir", e))?;
        let mesh = scratch.path().join("mesh.yaml");
        std::fs::write(&mesh, mesh_loadgen::istiod::MESH_CONFIG)
            .map_err(|e| HarnessError::io(format!("writing {}", mesh.display()), e))?;
        let log = scratch.path().join("istiod.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        let xds = loopback(free_port()?);
        let http = loopback(free_port()?);
        let monitoring = loopback(free_port()?);
        let ctrlz = free_port()?;
        let mut cmd = Command::new(&bin);
        let ports = mesh_loadgen::istiod::Ports {
            xds,
            http,
            monitoring,
            ctrlz,
        };
        mesh_loadgen::istiod::configure(
            &mut cmd,
            dir,
            &mesh,
            scratch.path(),
            &ports,
            "istiod-test",
            ("50ms", "1s"),
        );
        cmd.current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", bin.display()), e))?;
        let mut me = Self {
            child,
            xds,
            http,
            monitoring,
            dir: dir.to_path_buf(),
            log,
            _scratch: scratch,
        };
        me.wait_ready().await?;
        Ok(me)
    }

    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(format!("exited with {status} before it was ready")));
            }
            // Kube-less, istiod's /ready stays 503 (its webhook probes are
            // only marked ready with a Kubernetes client), so its xDS
            // readiness is read from the log line that marks it, as well.
            let ready = matches!(http_get(self.http, "/ready").await, Ok((200, _)))
                || !self.log_lines_with(READY_LOG_LINE).is_empty();
            if ready && tokio::net::TcpStream::connect(self.xds).await.is_ok() {
                // Give the first push debounce a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.failure(format!(
                    "not ready within {READY_TIMEOUT:?} (no {READY_LOG_LINE:?} in its log, and \
                     GET http://{}/ready did not answer 200)",
                    self.http
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn failure(&self, what: String) -> HarnessError {
        HarnessError::Script {
            script: "istiod".into(),
            message: format!(
                "{what}; the last lines of its log ({}):\n{}",
                self.log.display(),
                self.log_tail(40)
            ),
        }
    }

    /// Where clients reach plaintext ADS (`127.0.0.1:port`).
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds
    }

    /// istiod's HTTP address (`/ready`, `/debug/*`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The last `n` lines istiod logged.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines containing `needle` (warnings about a config, say).
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// GET `path` of istiod's debug HTTP server: its body when it answers
    /// 200.
    pub async fn debug(&self, path: &str) -> Result<String, HarnessError> {
        match http_get(self.http, path).await {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(self.failure(format!(
                "GET {path} answered {code}: {}",
                body.chars().take(300).collect::<String>()
            ))),
            Err(e) => Err(self.failure(format!("GET {path}: {e}"))),
        }
    }

    /// The NACKs istiod logged so far (`ADS:<type>: ACK ERROR <node>
    /// <code>:<message>`), oldest first.
    pub fn nacks(&self) -> Vec<String> {
        self.log_lines_with(NACK_LOG_LINE)
            .into_iter()
            .map(|l| {
                l.split_once("ADS:")
                    .map_or(l.clone(), |(_, rest)| format!("ADS:{rest}"))
            })
            .collect()
    }

    /// Runs a stock client against istiod; also returns the NACKs istiod
    /// logged meanwhile (a client rejecting istiod's resources), which a
    /// comparison reports rather than fails on.
    pub async fn run_client(
        &self,
        tool: &Tool,
        bootstrap: &Path,
        args: &[String],
    ) -> Result<(Report, Vec<String>), HarnessError> {
        let before = self.nacks().len();
        let result = tool.run_client(bootstrap, args, RUN_TIMEOUT).await;
        let nacks = self.nacks().split_off(before);
        match result {
            Ok(r) => Ok((r, nacks)),
            Err(HarnessError::Script { script, message }) => Err(HarnessError::Script {
                script: format!("{script} (against istiod)"),
                message: format!("{message}; NACKs istiod logged meanwhile: {nacks:?}"),
            }),
            Err(other) => Err(other),
        }
    }
}

/// A minimal HTTP/1.1 GET (istiod's debug and metrics endpoints are plain
/// HTTP on loopback): status code and body, bounded by 5 seconds.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = String::new();
        let _ = write!(
            req,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5s"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_a_chunked_body() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn missing_binary_names_the_build_command() {
        let bad = cached_binary().with_file_name("surely-not-here");
        let msg = existing(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains(BUILD_COMMAND), "{msg}");
    }
}
