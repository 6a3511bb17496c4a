//! A real Prometheus server for tests: Debian's `prometheus` binary run
//! on loopback with a generated scrape config (every target at
//! `/stats/prometheus`, every second), storage in a temporary directory,
//! and its HTTP API (`/api/v1/query`) to run PromQL against; plus
//! `promtool check metrics` on an exposition, and a plain HTTP GET.
//!
//! A missing binary fails the test with the command that installs it
//! (`scripts/test.sh` does); nothing here skips.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// What to run when a Debian tool is missing.
pub const INSTALL: &str = "apt-get install prometheus (Debian's package: prometheus and promtool; scripts/test.sh installs it)";

/// A running Prometheus; killed and reaped on drop.
pub struct Prometheus {
    child: Child,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// A `/api/v1/query` answer's series: its labels and value.
#[derive(Debug, Clone)]
pub struct Series {
    /// The series' labels (`__name__` absent after aggregation).
    pub labels: serde_json::Map<String, Value>,
    /// Its value at the query time.
    pub value: f64,
}

impl Series {
    /// The value of label `key`, `""` when absent (as PromQL sees it).
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).and_then(Value::as_str).unwrap_or("")
    }
}

/// The path of a Debian tool, or a panic that says how to install it.
pub fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin").join(name)).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} is not installed: {INSTALL}"))
}

/// The scrape config: one job scraping every target's
/// `/stats/prometheus` each second, each target labelled with its
/// workload name (as Kubernetes service discovery would add a pod label).
pub fn scrape_config(targets: &[(String, SocketAddr)]) -> String {
    let mut cfg = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: mesh\n  metrics_path: /stats/prometheus\n  static_configs:\n",
    );
    for (name, addr) in targets {
        cfg.push_str(&format!(
            "  - targets: ['{addr}']\n    labels: {{pod: '{name}'}}\n"
        ));
    }
    cfg
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port scraping `targets`
    /// (name, address) and waits until it is ready.
    pub async fn start(targets: &[(String, SocketAddr)]) -> Prometheus {
        let bin = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets)).unwrap();
        // Prometheus binds by itself: take a free port and let it go.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", bin.display()));
        let mut p = Prometheus { child, addr, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}) before ready:\n{}", p.log());
            }
            if matches!(get(addr, "/-/ready", None).await, Ok((200, _))) {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready within 30s:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prometheus' own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query now; panics on an API error, naming the query.
    pub async fn query(&self, promql: &str) -> Vec<Series> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = get(self.addr, &path, None)
            .await
            .unwrap_or_else(|e| panic!("querying prometheus: {e}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {status} {body:?}: {e}"));
        assert_eq!(
            v["status"], "success",
            "prometheus rejected {promql}: {body}"
        );
        let result = &v["data"]["result"];
        let vector = match v["data"]["resultType"].as_str() {
            // A scalar is one unlabelled value.
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": result})],
            _ => result.as_array().cloned().unwrap_or_default(),
        };
        vector
            .iter()
            .map(|s| Series {
                labels: s["metric"].as_object().cloned().unwrap_or_default(),
                value: s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// Polls `promql` every 200 ms until `done` holds for its answer,
    /// then returns it; panics after `within`, with the last answer.
    pub async fn query_until(
        &self,
        promql: &str,
        within: Duration,
        done: impl Fn(&[Series]) -> bool,
    ) -> Vec<Series> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.query(promql).await;
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {promql}\nlast answer: {got:#?}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromtoolReport {
    /// Its exit code: 0 clean, 1 the exposition does not parse, 3 lint
    /// problems (one per line on stderr).
    pub code: Option<i32>,
    /// The problems it printed, one per line.
    pub problems: Vec<String>,
}

/// Runs `promtool check metrics` on `exposition` (classic text format).
pub fn promtool_check(exposition: &str) -> PromtoolReport {
    use std::io::Write as _;
    let bin = tool("promtool");
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", bin.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    PromtoolReport {
        code: out.status.code(),
        problems: text.lines().map(str::to_string).collect(),
    }
}

/// GET `path` from `addr` over HTTP/1.1, with an optional `Accept`:
/// (status, body).
pub async fn get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, addr.to_string());
    if let Some(a) = accept {
        req = req.header(http::header::ACCEPT, a);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
