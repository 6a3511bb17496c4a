//! The stock gRPC programs: finding Python `grpcio` and Node
//! `@grpc/grpc-js-xds`, writing their bootstrap with `meshctl bootstrap
//! grpc`, and running the scripts in `tests/interop/{python,node}` with a
//! hard timeout.
//!
//! A missing interpreter or package makes [`Tool::find`] fail with what is
//! missing and how to install it: a test that cannot run fails, it never
//! passes by skipping. `scripts/test.sh` installs both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::HarnessError;

/// Which stock gRPC implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Python `grpcio` (gRPC C-core).
    Python,
    /// Node `@grpc/grpc-js` with `@grpc/grpc-js-xds`.
    Node,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Node => "node",
        }
    }
}

fn tracing_on() -> bool {
    std::env::var("MESH_INTEROP_TRACE").as_deref() == Ok("1")
}

/// `tests/interop`, where the scripts and package manifests are.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// An interpreter with the gRPC packages installed.
#[derive(Debug, Clone)]
pub struct Tool {
    lang: Lang,
    program: &'static str,
}

fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .current_dir(interop_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Tool {
    /// The tool for `lang`, or an error saying what is missing and the
    /// command that installs it. There is no skipping: a test that cannot
    /// run fails (`scripts/test.sh` installs both into `target/`).
    pub fn find(lang: Lang) -> Result<Tool, HarnessError> {
        let missing = match lang {
            Lang::Python => (!runs("python3", &["-c", "import grpc"])).then_some(
                "python3 with grpcio is not on PATH; run scripts/test.sh (it installs grpcio into target/interop-venv and puts it first on PATH), or `pip install -r tests/interop/requirements.txt`",
            ),
            Lang::Node => {
                if !runs("node", &["--version"]) {
                    Some("node is not installed (Node 20 is what CI uses)")
                } else if !interop_dir()
                    .join("node_modules/@grpc/grpc-js-xds/package.json")
                    .exists()
                {
                    Some("tests/interop/node_modules is missing; run scripts/test.sh, or `npm ci` in tests/interop")
                } else {
                    None
                }
            }
        };
        let program = match lang {
            Lang::Python => "python3",
            Lang::Node => "node",
        };
        match missing {
            None => Ok(Tool { lang, program }),
            Some(why) => Err(HarnessError::Script {
                script: format!("{} interop", lang.name()),
                message: why.to_string(),
            }),
        }
    }

    /// Which implementation.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    fn script(&self, name: &str) -> PathBuf {
        let ext = match self.lang {
            Lang::Python => "py",
            Lang::Node => "js",
        };
        interop_dir()
            .join(self.lang.name())
            .join(format!("{name}.{ext}"))
    }

    fn command(&self, script: &str, bootstrap: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.arg(self.script(script))
            .args(args)
            .current_dir(interop_dir())
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // MESH_INTEROP_TRACE=1 shows why a client rejects a resource.
        if tracing_on() {
            let (verbosity, trace) = match self.lang {
                Lang::Python => ("debug", "xds_client,xds_resolver,xds_server_config_fetcher"),
                Lang::Node => (
                    "DEBUG",
                    "xds_client,xds_resolver,xds_server,server,subchannel",
                ),
            };
            cmd.env("GRPC_VERBOSITY", verbosity)
                .env("GRPC_TRACE", trace);
        } else {
            cmd.env("GRPC_VERBOSITY", "ERROR");
        }
        cmd
    }

    /// Runs the `client` script with `args`, killed after `timeout`, and
    /// reads its JSON report from stdout.
    pub async fn run_client(
        &self,
        bootstrap: &Path,
        args: &[String],
        timeout: Duration,
    ) -> Result<Report, HarnessError> {
        let script = format!("{} client {}", self.lang.name(), args.join(" "));
        let mut child = self
            .command("client", bootstrap, args)
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {script}"), e))?;
        // Pipes are drained as the client runs so a killed client still
        // leaves its log for the error message.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(r) => Some(r.map_err(|e| HarnessError::io(format!("running {script}"), e))?),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        };
        let out = std::process::Output {
            status: status.unwrap_or_default(),
            stdout: stdout.await.unwrap_or_default(),
            stderr: stderr.await.unwrap_or_default(),
        };
        if status.is_none() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(HarnessError::Script {
                script,
                message: format!(
                    "did not finish within {timeout:?} (killed); stderr:\n{}",
                    tail.join("\n")
                ),
            });
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if tracing_on() {
            eprintln!("--- {script} stderr:\n{stderr}");
        }
        let tail: String = stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        if !out.status.success() {
            return Err(HarnessError::Script {
                script,
                message: format!("exited with {}; stderr:\n{tail}", out.status),
            });
        }
        let value: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| HarnessError::Script {
                script: script.clone(),
                message: format!(
                    "printed no JSON report ({e}); stdout: {}; stderr:\n{tail}",
                    String::from_utf8_lossy(&out.stdout)
                ),
            })?;
        Ok(Report(value))
    }

    /// Starts the long-running `script` and waits (at most `timeout`) for
    /// the line `READY` on its stdout.
    pub async fn spawn_server(
        &self,
        script: &str,
        bootstrap: &Path,
        args: &[String],
        timeout: Duration,
    ) -> Result<ServerProcess, HarnessError> {
        let what = format!("{} {script}", self.lang.name());
        let mut cmd = self.command(script, bootstrap, args);
        if tracing_on() {
            // A server's log is the only way to see why it refuses calls.
            cmd.stderr(Stdio::inherit());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {what}"), e))?;
        let stdout = child.stdout.take().ok_or_else(|| HarnessError::Script {
            script: what.clone(),
            message: "no stdout pipe".into(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "READY" {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.ok();
            let stderr = out
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            return Err(HarnessError::Script {
                script: what,
                message: format!("never printed READY within {timeout:?}; stderr:\n{stderr}"),
            });
        }
        Ok(ServerProcess { _child: child })
    }
}

/// Reads a child's pipe to the end in the background.
fn drain<R>(pipe: Option<R>) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
        }
        buf
    })
}

/// A running script; killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    _child: Child,
}

/// Writes the bootstrap `meshctl bootstrap grpc --xds-addr XDS FLAGS...`
/// prints into `dir/name.json`.
pub fn write_bootstrap(
    dir: &Path,
    name: &str,
    xds: SocketAddr,
    flags: &[&str],
) -> Result<PathBuf, HarnessError> {
    let addr = xds.to_string();
    let mut all = vec!["--xds-addr", addr.as_str()];
    all.extend_from_slice(flags);
    let doc = meshctl::bootstrap::bootstrap_from_flags(all).map_err(HarnessError::Bootstrap)?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&doc).map_err(|e| {
        HarnessError::Bootstrap(format!("the bootstrap does not serialize to JSON: {e}"))
    })?;
    std::fs::write(&path, text)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// What a client script printed: calls per backend and per status code,
/// latencies, and for keyed runs which backends each key reached.
#[derive(Debug, Clone)]
pub struct Report(pub Value);

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

impl Report {
    /// Calls answered OK by each backend.
    pub fn backends(&self) -> BTreeMap<String, u64> {
        counts(&self.0["backends"])
    }

    /// Calls answered OK by `name`.
    pub fn backend(&self, name: &str) -> u64 {
        self.backends().get(name).copied().unwrap_or(0)
    }

    /// Calls per gRPC status name (`OK`, `UNAVAILABLE`, ...).
    pub fn codes(&self) -> BTreeMap<String, u64> {
        counts(&self.0["codes"])
    }

    /// Calls that ended with status `name`.
    pub fn code(&self, name: &str) -> u64 {
        self.codes().get(name).copied().unwrap_or(0)
    }

    /// Calls made (warm-up excluded).
    pub fn total(&self) -> u64 {
        self.codes().values().sum()
    }

    /// For keyed runs: key -> backend -> OK calls.
    pub fn by_key(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.0["by_key"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), counts(v))).collect())
            .unwrap_or_default()
    }

    /// With `--sequence`: each call's backend, or its status when it failed.
    pub fn sequence(&self) -> Vec<String> {
        self.0["sequence"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Latency statistic (`min`, `p50`, `max`) in milliseconds.
    pub fn latency_ms(&self, stat: &str) -> f64 {
        self.0["latency_ms"][stat].as_f64().unwrap_or(f64::NAN)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
