//! Child processes (the upstream and the proxies) and what `/proc` says
//! about them: CPU time and resident memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Linux reports `utime`/`stime` in USER_HZ, which the kernel fixes at
/// 100 for user space on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// A port free right now (the process under test binds it a moment later).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// A child process stopped (by its own pid) when dropped, so a failed row
/// never leaves a proxy running.
pub struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    /// SIGTERM first: nginx's master stops its workers on TERM, while a
    /// SIGKILL would orphan them still holding the port. SIGKILL after
    /// 3 s for whatever ignores it.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Proc {
            child,
            name: name.to_string(),
        })
    }

    /// Starts `cmd` and waits until it prints `ready_line` on stdout
    /// (stderr goes to `log`), for at most `limit`.
    pub fn spawn_until_line(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        ready_line: &str,
        limit: Duration,
    ) -> Result<Proc, String> {
        let err = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        let stdout = child.stdout.take();
        let mut proc = Proc {
            child,
            name: name.to_string(),
        };
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            // Keeps reading after ready so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.trim() == ready_line => return Ok(proc),
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before {ready_line:?}; stdout:\n{}\nstderr: {}",
                    seen.join("\n"),
                    log.display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{name} did not print {ready_line:?} within {limit:?}; see {}",
                    log.display()
                ));
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(format!("{} exited: {s}", self.name)),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!("nothing listening on {addr} after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The children of `pid` (nginx's workers), from each process's `stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|st| st.ppid == pid)
        })
        .collect()
}

/// The fields of `/proc/PID/stat` the bench reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id.
    pub ppid: u32,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses `/proc/PID/stat`; the command name may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// `VmRSS` and `VmHWM` of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(s: &str) -> (u64, u64) {
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One proxy as the table counts it: a single process (a shim, haproxy)
/// or a master with its workers (nginx).
#[derive(Debug, Clone)]
pub struct Group {
    /// What the table calls it.
    pub name: String,
    /// Every process of the proxy.
    pub pids: Vec<u32>,
}

impl Group {
    /// CPU seconds used so far by all its processes.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self
            .pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|s| parse_stat(&s))
            .map(|s| s.cpu_ticks)
            .sum();
        ticks as f64 / TICKS_PER_SECOND
    }

    /// Resident memory now and its peak, summed over its processes, KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .map(|s| parse_status_kib(&s))
            .fold((0, 0), |(r, h), (r2, h2)| (r + r2, h + h2))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        let s = "1234 (mesh (shim) x) S 77 1234 1234 0 -1 4194560 900 0 0 0 250 35 0 0 20 0 3 0 100 1000 500";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                ppid: 77,
                cpu_ticks: 285
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_gives_rss_and_peak() {
        let s = "Name:\tmesh-shim\nVmPeak:\t  9000 kB\nVmHWM:\t    8123 kB\nVmRSS:\t    7001 kB\n";
        assert_eq!(parse_status_kib(s), (7001, 8123));
        assert_eq!(parse_status_kib(""), (0, 0));
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = Group {
            name: "self".into(),
            pids: vec![std::process::id()],
        };
        let (rss, hwm) = me.rss_kib();
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
        assert!(me.cpu_seconds() >= 0.0);
    }
}
