//! The processes: etcd and kube-apiserver on loopback with the flags
//! `scripts/kube-peers.sh --smoke` verified, their files (data, certs,
//! tokens, keys, kubeconfigs, logs) in one temporary directory, and kube-rs
//! clients built from the same kubeconfig files a meshd process would read.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::discovery::{ApiCapabilities, ApiResource};
use ::kube::{Client, Config};
use base64::Engine as _;
use tokio::time::Instant;

use super::binaries::{apiserver_binary, etcd_binary};
use super::etcd_http;

/// The admin user: its token is in group `system:masters`, which the API
/// server allows everything before RBAC is asked. [`KubeCluster::client`]
/// is this user.
pub const ADMIN: &str = "mesh-admin";

/// The non-admin user every cluster has by default (see
/// [`KubeClusterOptions::users`]): only what RBAC grants it (at first, the
/// defaults of `system:authenticated`: discovery, no objects), so a test can
/// check meshd's ClusterRole by applying it and binding it to this user.
pub const MESHD: &str = "meshd";

/// How long etcd and kube-apiserver each get to become ready (etcd
/// `/health`, kube-apiserver `/readyz`); both take about 0.1-3 s.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long kube-apiserver gets to exit after SIGTERM before SIGKILL. It
/// closes its watches and stops listening within about 1 s; at v1.37.2 it
/// then sometimes spends 5 s more stopping its ServiceCIDR allocator
/// (`cidrallocator.go`), which no test waits for.
const STOP_WITHIN: Duration = Duration::from_secs(3);

/// Lines of each log printed when a test panics with the cluster alive.
const LOG_TAIL: usize = 40;

/// How a [`KubeCluster`] is started.
#[derive(Debug, Clone)]
pub struct KubeClusterOptions {
    /// kube-apiserver's watch cache (`--watch-cache`, on by default, as in
    /// real clusters). With it on, the API server serves lists and watches
    /// from memory and itself hides an etcd compaction
    /// ([`KubeCluster::compact_etcd`]): watches resumed from an old
    /// resourceVersion mostly keep working. Turn it off
    /// (`--watch-cache=false`) to have every watch read etcd, so that a
    /// watch from a compacted resourceVersion gets 410 Gone and the client
    /// has to relist.
    pub watch_cache: bool,
    /// Non-admin users, each with a bearer token and no group but
    /// `system:authenticated`; [`MESHD`] by default.
    pub users: Vec<String>,
}

impl Default for KubeClusterOptions {
    fn default() -> Self {
        KubeClusterOptions {
            watch_cache: true,
            users: vec![MESHD.to_string()],
        }
    }
}

/// etcd and kube-apiserver running on loopback; both killed on drop (the
/// API server first). When a test panics while it is alive, the tail of
/// both logs goes to stderr.
///
/// Not a full cluster: no kubelet or controllers run (see the module
/// documentation for what that means to a test).
pub struct KubeCluster {
    // Field order is drop order: the API server goes before etcd, and the
    // directory their files are in goes last.
    apiserver: Option<Proc>,
    etcd: Proc,
    options: KubeClusterOptions,
    apiserver_bin: PathBuf,
    etcd_addr: SocketAddr,
    api_port: u16,
    /// (user, token), the admin first.
    tokens: Vec<(String, String)>,
    ca_pem: String,
    /// (user, client), the admin first; built once the CA is known.
    clients: Vec<(String, Client)>,
    /// Discovery answers by "group/version/Kind", for `apply_yaml`.
    pub(super) kinds: Mutex<HashMap<String, (ApiResource, ApiCapabilities)>>,
    dir: tempfile::TempDir,
}

impl KubeCluster {
    /// Starts etcd and kube-apiserver with the default options (watch
    /// cache on, users [`ADMIN`] and [`MESHD`]) and waits until the API
    /// server is ready. Panics (with the logs' tails) when a binary is
    /// missing or either is not ready within [`READY_WITHIN`].
    pub async fn start() -> KubeCluster {
        KubeCluster::start_with(KubeClusterOptions::default()).await
    }

    /// [`KubeCluster::start`] with `options`.
    pub async fn start_with(options: KubeClusterOptions) -> KubeCluster {
        let started = Instant::now();
        let etcd_bin = etcd_binary();
        let apiserver_bin = apiserver_binary();
        for user in &options.users {
            assert!(
                user != ADMIN
                    && !user.is_empty()
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c)),
                "user name {user:?}: not {ADMIN}, and only letters, digits and -_.:@ \
                 (it goes into a CSV file and a YAML file unquoted)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("mesh-kube-")
            .tempdir()
            .unwrap();
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_addr = SocketAddr::from(([127, 0, 0, 1], client_port));
        let peer = format!("http://127.0.0.1:{peer_port}");
        let client = format!("http://{etcd_addr}");
        let etcd = Proc::spawn(
            "etcd",
            &etcd_bin,
            &[
                "--name=mesh-test".to_string(),
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=mesh-test={peer}"),
                // Throwaway data: no fsync makes every write cheap.
                "--unsafe-no-fsync".to_string(),
                "--log-level=warn".to_string(),
            ],
            &dir.path().join("etcd.log"),
        );

        // Bearer tokens (`token,user,uid[,"groups"]`): the admin in
        // system:masters, the others in no group of their own.
        let mut tokens = vec![(ADMIN.to_string(), random_token())];
        tokens.extend(options.users.iter().map(|u| (u.clone(), random_token())));
        let mut csv = String::new();
        for (i, (user, token)) in tokens.iter().enumerate() {
            let groups = if i == 0 { ",\"system:masters\"" } else { "" };
            csv.push_str(&format!("{token},{user},{user}{groups}\n"));
        }
        std::fs::write(dir.path().join("tokens.csv"), csv).unwrap();
        // The service-account token signing key (ECDSA P-256; the API
        // server needs one even though no test mints tokens).
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("sa.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("sa.pub"), key.public_key_pem()).unwrap();

        let mut cluster = KubeCluster {
            apiserver: None,
            etcd,
            options,
            apiserver_bin,
            etcd_addr,
            api_port,
            tokens,
            ca_pem: String::new(),
            clients: Vec::new(),
            kinds: Mutex::new(HashMap::new()),
            dir,
        };
        cluster.wait_etcd().await;
        let etcd_ready = started.elapsed();
        cluster.start_apiserver().await;
        eprintln!(
            "kube: etcd ready after {:.2}s, kube-apiserver {} ready after {:.2}s (total), files in {}",
            etcd_ready.as_secs_f64(),
            cluster.url(),
            started.elapsed().as_secs_f64(),
            cluster.dir.path().display()
        );
        cluster
    }

    async fn wait_etcd(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let answer = etcd_http::call(self.etcd_addr, http::Method::GET, "/health", "").await;
            if matches!(&answer, Ok((200, body)) if body.contains(r#""health":"true""#)) {
                return;
            }
            self.etcd
                .check_alive(deadline, &format!("etcd /health: {answer:?}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The API server's flags (the same on every start).
    fn apiserver_args(&self) -> Vec<String> {
        let dir = self.dir.path();
        let mut args = vec![
            format!("--etcd-servers=http://{}", self.etcd_addr),
            "--bind-address=127.0.0.1".to_string(),
            // Else it advertises the default route's address, and there
            // is none in a private network namespace.
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={}", self.api_port),
            // apiserver.crt here: the serving certificate (SANs IP
            // 127.0.0.1 and the kubernetes.default.svc names, no
            // "localhost"), then its self-signed CA. Written at the first
            // start and reused by the next ones.
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            // No kubelets, so no Node authorizer: RBAC only.
            "--authorization-mode=RBAC".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            "--service-cluster-ip-range=10.96.0.0/16".to_string(),
            // The default (lease) reconciler writes the advertise address
            // into the "kubernetes" Endpoints, which refuse loopback, and
            // the API server exits at start.
            "--endpoint-reconciler-type=none".to_string(),
            // No controller-manager makes a namespace's "default"
            // ServiceAccount; with the plugin on, every Pod create is 403.
            "--disable-admission-plugins=ServiceAccount".to_string(),
        ];
        if !self.options.watch_cache {
            args.push("--watch-cache=false".to_string());
        }
        args
    }

    /// Starts kube-apiserver again after [`KubeCluster::stop_apiserver`]
    /// (same port, etcd, certificates and tokens, so existing clients and
    /// kubeconfig files stay valid) and waits until it is ready. Also how
    /// [`KubeCluster::start`] starts it the first time. Panics when it is
    /// already running or not ready within [`READY_WITHIN`].
    pub async fn start_apiserver(&mut self) {
        assert!(
            self.apiserver.is_none(),
            "start_apiserver: kube-apiserver is already running"
        );
        let log = self.dir.path().join("kube-apiserver.log");
        self.apiserver = Some(Proc::spawn(
            "kube-apiserver",
            &self.apiserver_bin,
            &self.apiserver_args(),
            &log,
        ));
        let deadline = Instant::now() + READY_WITHIN;
        let cert = self.dir.path().join("certs").join("apiserver.crt");
        let ca = loop {
            if let Some(ca) = read_ca(&cert) {
                break ca;
            }
            self.api().check_alive(
                deadline,
                &format!("{} not written (CA not found)", cert.display()),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if self.clients.is_empty() {
            self.ca_pem = ca;
            self.write_kubeconfigs().await;
        } else {
            assert_eq!(
                ca, self.ca_pem,
                "kube-apiserver made a new CA on restart; existing clients would not trust it"
            );
        }
        let admin = self.client();
        loop {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            let answer =
                tokio::time::timeout(Duration::from_secs(2), admin.request_text(req)).await;
            let last = match answer {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => format!("/readyz: {e}"),
                Err(_) => "/readyz: no answer within 2s".to_string(),
            };
            self.api().check_alive(deadline, &last);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops kube-apiserver as a rolling restart would: SIGTERM (it
    /// closes its watches and stops listening within about 1 s), SIGKILL
    /// if it has not exited 3 s later, and waits until it has exited; etcd
    /// keeps running. Clients get connection errors until
    /// [`KubeCluster::start_apiserver`].
    pub async fn stop_apiserver(&mut self) {
        let mut api = self
            .apiserver
            .take()
            .expect("stop_apiserver: kube-apiserver is not running");
        api.terminate(STOP_WITHIN).await;
    }

    /// Kills kube-apiserver as a crash would (SIGKILL: no graceful close
    /// of its connections) and reaps it; etcd keeps running. Start it again
    /// with [`KubeCluster::start_apiserver`].
    pub fn kill_apiserver(&mut self) {
        drop(
            self.apiserver
                .take()
                .expect("kill_apiserver: kube-apiserver is not running"),
        );
    }

    fn api(&self) -> &Proc {
        self.apiserver
            .as_ref()
            .expect("kube-apiserver is not running")
    }

    /// Writes one kubeconfig per user and builds its client from it.
    async fn write_kubeconfigs(&mut self) {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        for (user, token) in &self.tokens {
            let text = format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters:\n- name: mesh-test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
                 users:\n- name: {user}\n  user:\n    token: {token}\n\
                 contexts:\n- name: {user}@mesh-test\n  context:\n    cluster: mesh-test\n    user: {user}\n    namespace: default\n\
                 current-context: {user}@mesh-test\n",
                self.url()
            );
            let path = self.dir.path().join(format!("kubeconfig-{user}.yaml"));
            std::fs::write(&path, &text).unwrap();
            let kubeconfig = Kubeconfig::from_yaml(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("kube::Config from {}: {e}", path.display()));
            let client = Client::try_from(config)
                .unwrap_or_else(|e| panic!("kube::Client from {}: {e}", path.display()));
            self.clients.push((user.clone(), client));
        }
    }

    /// A client of the admin user ([`ADMIN`], group `system:masters`).
    pub fn client(&self) -> Client {
        self.client_as(ADMIN)
    }

    /// A client of `user` ([`ADMIN`] or one of
    /// [`KubeClusterOptions::users`]), built from [`KubeCluster::kubeconfig`].
    /// It outlives API server restarts.
    pub fn client_as(&self, user: &str) -> Client {
        self.clients
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no user {user:?}; users: {:?}", self.users()))
    }

    /// `user`'s bearer token.
    pub fn token_for(&self, user: &str) -> &str {
        self.tokens
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("no user {user:?}; users: {:?}", self.users()))
    }

    fn users(&self) -> Vec<&str> {
        self.tokens.iter().map(|(u, _)| u.as_str()).collect()
    }

    /// A kubeconfig file for `user` (server `https://127.0.0.1:PORT`, the
    /// CA inline as `certificate-authority-data`, the user's token), for
    /// `KUBECONFIG` of a process the test starts (meshd). That process must
    /// be started from inside the same network namespace (any thread of a
    /// test that called [`super::netns::enter_private`]).
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.token_for(user);
        self.dir.path().join(format!("kubeconfig-{user}.yaml"))
    }

    /// The API server's URL, `https://127.0.0.1:PORT` (its certificate has
    /// no `localhost` name).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The PEM of the CA that signed the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// etcd's client URL (plain HTTP), for tests that go behind the API
    /// server's back.
    pub fn etcd_url(&self) -> String {
        format!("http://{}", self.etcd_addr)
    }

    /// The directory with the cluster's files (certs, tokens, kubeconfigs,
    /// logs, etcd data); removed on drop. A test may put its own files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Compacts etcd's history up to its current revision (through etcd's
    /// JSON gateway: `/v3/kv/range` for the revision, then
    /// `/v3/kv/compaction`) and returns that revision. With the watch cache
    /// off ([`KubeClusterOptions::watch_cache`]), a watch from an older
    /// resourceVersion then gets 410 Gone, so a test can check relists.
    pub async fn compact_etcd(&self) -> i64 {
        let (status, body) = etcd_http::call(
            self.etcd_addr,
            http::Method::POST,
            "/v3/kv/range",
            r#"{"key":"AA=="}"#,
        )
        .await
        .unwrap_or_else(|e| panic!("etcd /v3/kv/range: {e}"));
        assert_eq!(status, 200, "etcd /v3/kv/range answered {status}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let revision = match &v["header"]["revision"] {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            n => n.as_i64(),
        }
        .unwrap_or_else(|| panic!("no header.revision in etcd's answer: {body}"));
        let (status, body) = etcd_http::call(
            self.etcd_addr,
            http::Method::POST,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("etcd /v3/kv/compaction: {e}"));
        assert_eq!(
            status, 200,
            "etcd /v3/kv/compaction to {revision} answered {status}: {body}"
        );
        revision
    }

    /// The last `lines` lines kube-apiserver logged (all its runs).
    pub fn apiserver_log(&self, lines: usize) -> String {
        tail(&self.dir.path().join("kube-apiserver.log"), lines)
    }

    /// The last `lines` lines etcd logged.
    pub fn etcd_log(&self, lines: usize) -> String {
        tail(&self.dir.path().join("etcd.log"), lines)
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kube: the test panicked; last {LOG_TAIL} lines of etcd's log:\n{}\n\
                 kube: last {LOG_TAIL} lines of kube-apiserver's log:\n{}",
                self.etcd_log(LOG_TAIL),
                self.apiserver_log(LOG_TAIL)
            );
        }
    }
}

/// A child process with its log file; killed and reaped on drop (what
/// tokio's `kill_on_drop` does, plus the reaping).
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin args`, stdout and stderr appended to `log`.
    fn spawn(name: &'static str, bin: &Path, args: &[String], log: &Path) -> Proc {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(file, "==== {} {}", bin.display(), args.join(" ")).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", bin.display()));
        Proc {
            name,
            child,
            log: log.to_path_buf(),
        }
    }

    /// Panics with the log's tail when the process has exited or
    /// `deadline` has passed; `last` says what was still missing.
    fn check_alive(&self, deadline: Instant, last: &str) {
        // try_wait needs &mut; /proc tells whether it still runs without it.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
            .flatten();
        assert!(
            !matches!(state, None | Some('Z' | 'X')),
            "{} exited before it was ready (last: {last}); its log:\n{}",
            self.name,
            tail(&self.log, LOG_TAIL)
        );
        assert!(
            Instant::now() < deadline,
            "{} not ready within {READY_WITHIN:?} (last: {last}); its log:\n{}",
            self.name,
            tail(&self.log, LOG_TAIL)
        );
    }

    /// SIGTERM, then waits up to `within` for it to exit; SIGKILL after.
    async fn terminate(&mut self, within: Duration) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CA in kube-apiserver's generated `apiserver.crt`: its second PEM
/// block (the first is the serving certificate). `None` until the file is
/// completely written.
fn read_ca(cert: &Path) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::fs::read_to_string(cert).ok()?;
    let mut blocks = text.split_inclusive(END).filter(|b| b.contains(END));
    let _serving = blocks.next()?;
    let ca = blocks.next()?.trim_start();
    ca.starts_with("-----BEGIN CERTIFICATE-----")
        .then(|| format!("{ca}\n"))
}

/// The last `lines` lines of a file (empty when there is none).
fn tail(path: &Path, lines: usize) -> String {
    let text = File::open(path)
        .ok()
        .and_then(|mut f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).ok()?;
            Some(s)
        })
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A bearer token: 128 bits from std's randomly keyed hasher (enough for a
/// cluster only the test can reach).
fn random_token() -> String {
    let mut token = String::new();
    for i in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        token.push_str(&format!("{:016x}", h.finish()));
    }
    token
}

/// A port free on 127.0.0.1 right now, for a server started a moment
/// later. Taken below the kernel's ephemeral range (32768 and up), so no
/// `:0` bind of a test running beside this one takes it in between (and
/// the API server's port stays free while it restarts), and never handed
/// out twice in one test binary.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // A different start per test binary, spread over 20000..32000.
    let start = std::process::id() % 600 * 20;
    for _ in 0..12000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20000 + (start + n) % 12000).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in 20000..32000");
}
