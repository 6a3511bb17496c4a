//! Starting `mesh-shim run` (or `gateway`, `agent`) as a child process and learning the ports it
//! bound, for supervisors, demos and tests: the shim prints one
//! `mesh-shim: <role> listening on <addr>` line per listener (so `0` ports
//! can be read back) and `mesh-shim: ready` once serving.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to start one shim.
#[derive(Debug, Clone)]
pub struct Launch {
    name: String,
    program: PathBuf,
    prefix: Vec<String>,
    subcommand: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Launch {
    /// `program run ARGS`, called `name` in its log lines.
    pub fn new(name: impl Into<String>, program: impl AsRef<Path>) -> Self {
        Launch {
            name: name.into(),
            program: program.as_ref().to_path_buf(),
            prefix: Vec::new(),
            subcommand: "run".into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Runs it under a wrapper (`ip netns exec NS`, `setpriv ...`).
    pub fn inside<S: AsRef<str>>(mut self, prefix: &[S]) -> Self {
        self.prefix = prefix.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Runs `mesh-shim gateway` instead of `run`.
    pub fn gateway(mut self) -> Self {
        self.subcommand = "gateway".into();
        self
    }

    /// Runs `mesh-shim agent` instead of `run`.
    pub fn agent(mut self) -> Self {
        self.subcommand = "agent".into();
        self
    }

    /// Appends arguments after the subcommand.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// Sets an environment variable for the shim (`MESH_SHIM_LOG=warn`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// True when `flag` was given.
    pub fn has(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    /// How long [`Launch::start`] waits for `ready` (30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Starts the shim and waits until it is ready; on failure, the error
    /// holds everything it printed.
    pub fn start(self) -> Result<Running, String> {
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(self.program.display().to_string());
        argv.push(self.subcommand.clone());
        argv.extend(self.args.iter().cloned());
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv.join(" ")))?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let tag = self.name.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("[{tag}] {l}");
                    let _ = tx.send(l);
                }
            });
        }
        let mut running = Running {
            name: self.name.clone(),
            child,
            addrs: BTreeMap::new(),
            lines: rx,
        };
        let mut seen = Vec::new();
        let deadline = Instant::now() + self.timeout;
        loop {
            match running.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix("mesh-shim: ") {
                        if let Some((role, addr)) = rest.split_once(" listening on ") {
                            if let Ok(a) = addr.parse() {
                                running.addrs.entry(role.to_string()).or_default().push(a);
                            }
                        }
                        if rest == "ready" {
                            return Ok(running);
                        }
                    }
                    seen.push(l);
                }
                Err(_) => {
                    if let Ok(Some(status)) = running.child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100));
                        seen.extend(running.lines.try_iter());
                        return Err(format!(
                            "{} exited with {status} before ready:\n{}",
                            self.name,
                            seen.join("\n")
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "{} not ready after {:?}:\n{}",
                            self.name,
                            self.timeout,
                            seen.join("\n")
                        ));
                    }
                }
            }
        }
    }
}

/// A running shim; killed when dropped.
#[derive(Debug)]
pub struct Running {
    name: String,
    child: Child,
    /// Bound listeners by role (`inbound`, `outbound`, `upstream`, `admin`,
    /// `metrics`, `ready`).
    pub addrs: BTreeMap<String, Vec<SocketAddr>>,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// The first listener of `role`; panics naming the roles it has when
    /// there is none (a caller bug).
    pub fn addr(&self, role: &str) -> SocketAddr {
        match self.addrs.get(role).and_then(|v| v.first()) {
            Some(a) => *a,
            None => panic!(
                "{} has no {role} listener; it has {:?}",
                self.name,
                self.addrs.keys()
            ),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as an orchestrator does.
    pub fn terminate(&self) -> std::io::Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?
            .success();
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -TERM {} failed",
                self.name
            )))
        }
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(s);
            }
            if start.elapsed() >= limit {
                return Err(format!("{} still running after {limit:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
