//! The five paths to the same upstream, each started fresh for its row so
//! every row's peak memory is its own: direct, one shim, nginx, haproxy,
//! and two shims with STRICT mesh mTLS between them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use mesh_ca::{csr, CaConfig, SpiffeId, WorkloadCertificate};

use crate::procs::{children_of, free_port, wait_listening, Group, Proc};

/// Which path a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Straight to the upstream.
    Direct,
    /// One shim: an `--upstream` port, L7 route, plaintext to the upstream.
    Shim,
    /// nginx `proxy_pass` with keep-alive upstream connections.
    Nginx,
    /// haproxy `mode http`.
    Haproxy,
    /// Client shim -> mTLS -> server shim -> upstream.
    ShimMtls,
}

impl Kind {
    /// Every row, in table order.
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::Shim,
        Kind::Nginx,
        Kind::Haproxy,
        Kind::ShimMtls,
    ];

    /// The row's label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Shim => "mesh-shim",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::ShimMtls => "2 shims, mTLS",
        }
    }
}

/// What every row shares: the upstream, the shim binary, a scratch
/// directory with the mesh config and certificates, and the worker count.
pub struct Env {
    /// The upstream's port on 127.0.0.1.
    pub upstream: u16,
    /// The `mesh-shim` binary under test.
    pub shim: PathBuf,
    /// Worker threads (shim), processes (nginx) or threads (haproxy).
    pub workers: u16,
    /// Scratch space (configs, logs, certificates).
    pub dir: PathBuf,
    /// The server shim's inbound port, fixed before the config is written
    /// because the WorkloadEntry names it.
    inbound: u16,
}

/// A started row: where to send load, and the proxies to measure.
pub struct Running {
    /// HTTP/1.1 (and, for the shim and direct rows, HTTP/2) entry.
    pub h1: SocketAddr,
    /// HTTP/2 prior-knowledge entry.
    pub h2: SocketAddr,
    /// The proxies whose CPU and memory count (none for direct).
    pub groups: Vec<Group>,
    /// Kept alive for the row, killed on drop.
    procs: Vec<Proc>,
}

impl Running {
    /// Fails when a proxy has died under load.
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }
}

/// The Istio YAML both shims read: `direct` is the plain upstream (no
/// sidecar, so `tlsMode: disabled`), `secure` the upstream behind the
/// server shim; each has a VirtualService so requests take the L7 route
/// path; STRICT mTLS mesh-wide.
fn mesh_yaml(upstream: u16, inbound: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: direct, namespace: default}}
spec:
  selector: {{app: direct}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: direct-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {upstream}}}
  labels: {{app: direct, security.istio.io/tlsMode: disabled}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct, namespace: default}}
spec:
  hosts: [direct]
  http:
  - match: [{{uri: {{prefix: /}}}}]
    route: [{{destination: {{host: direct, port: {{number: 80}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: default}}
spec:
  selector: {{app: secure}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: secure-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {inbound}}}
  labels: {{app: secure}}
  serviceAccount: secure
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure]
  http:
  - match: [{{uri: {{prefix: /}}}}]
    route: [{{destination: {{host: secure, port: {{number: 80}}}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: STRICT}}}}
"
    )
}

fn issue(ca: &mesh_ca::CertificateAuthority, sa: &str) -> Result<WorkloadCertificate, String> {
    let id = SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}"))
        .map_err(|e| e.to_string())?;
    let req = csr::generate(&id).map_err(|e| e.to_string())?;
    let issued = ca
        .sign_csr_at(&req.csr_pem, &id, None, SystemTime::now())
        .map_err(|e| e.to_string())?;
    WorkloadCertificate::from_ca_response(&issued.chain_pem, None, req.key)
        .map_err(|e| e.to_string())
}

impl Env {
    /// Writes the mesh config and a certificate directory per service
    /// account into `dir`.
    pub fn new(dir: &Path, upstream: u16, shim: PathBuf, workers: u16) -> Result<Env, String> {
        let inbound = free_port()?;
        let conf = dir.join("mesh");
        std::fs::create_dir_all(&conf).map_err(|e| e.to_string())?;
        std::fs::write(conf.join("mesh.yaml"), mesh_yaml(upstream, inbound))
            .map_err(|e| e.to_string())?;
        let ca = mesh_ca::ca_store::load_or_create(&dir.join("ca"), CaConfig::new("cluster.local"))
            .map_err(|e| format!("mesh CA: {e}"))?
            .0;
        for sa in ["client", "secure"] {
            let cert = issue(&ca, sa)?;
            mesh_ca::files::write_workload_files(&dir.join("certs").join(sa), &cert)
                .map_err(|e| format!("certificates for {sa}: {e}"))?;
        }
        Ok(Env {
            upstream,
            shim,
            workers,
            dir: dir.to_path_buf(),
            inbound,
        })
    }

    /// Starts the row's proxies and waits until they serve.
    pub fn start(&self, kind: Kind) -> Result<Running, String> {
        let up = SocketAddr::from(([127, 0, 0, 1], self.upstream));
        let running = match kind {
            Kind::Direct => Running {
                h1: up,
                h2: up,
                groups: Vec::new(),
                procs: Vec::new(),
            },
            Kind::Shim => {
                let (p, addr) = self.client_shim("direct:80")?;
                Running {
                    h1: addr,
                    h2: addr,
                    groups: vec![group("mesh-shim", &p)],
                    procs: vec![p],
                }
            }
            Kind::ShimMtls => {
                let server = self.server_shim()?;
                let (client, addr) = self.client_shim("secure:80")?;
                Running {
                    h1: addr,
                    h2: addr,
                    groups: vec![group("client shim", &client), group("server shim", &server)],
                    procs: vec![client, server],
                }
            }
            Kind::Nginx => self.nginx()?,
            Kind::Haproxy => self.haproxy()?,
        };
        wait_listening(running.h1, Duration::from_secs(10))?;
        wait_listening(running.h2, Duration::from_secs(10))?;
        Ok(running)
    }

    fn shim_cmd(&self, name: &str, sa: &str) -> Command {
        let mut cmd = Command::new(&self.shim);
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.join("mesh"))
            .args(["--labels", &format!("app={name}")])
            .args(["--service-account", sa, "--workload-name", name])
            .arg("--cert-dir")
            .arg(self.dir.join("certs").join(sa))
            .args(["--threads", &self.workers.to_string()])
            .args(["--outbound-port", "0", "--admin-port", "0"])
            .args(["--metrics-port", "0", "--ready-port", "0"])
            .args(["--inbound-addr", "127.0.0.1"]);
        cmd
    }

    /// The app-side shim: one `--upstream` port to `target`, no inbound.
    fn client_shim(&self, target: &str) -> Result<(Proc, SocketAddr), String> {
        let local = free_port()?;
        let mut cmd = self.shim_cmd("client", "client");
        cmd.args(["--inbound-port", "0"])
            .args(["--upstream", &format!("{local}={target}")]);
        let log = self.dir.join(format!("shim-client-{}.log", local));
        let p = Proc::spawn_until_line(
            "client shim",
            &mut cmd,
            &log,
            "mesh-shim: ready",
            Duration::from_secs(30),
        )?;
        Ok((p, SocketAddr::from(([127, 0, 0, 1], local))))
    }

    /// The upstream's shim: mesh traffic in on the inbound port, STRICT.
    fn server_shim(&self) -> Result<Proc, String> {
        let mut cmd = self.shim_cmd("secure", "secure");
        cmd.args(["--inbound-port", &self.inbound.to_string()])
            .args(["--app-port", &self.upstream.to_string()]);
        Proc::spawn_until_line(
            "server shim",
            &mut cmd,
            &self.dir.join("shim-server.log"),
            "mesh-shim: ready",
            Duration::from_secs(30),
        )
    }

    fn nginx(&self) -> Result<Running, String> {
        let (h1, h2) = (free_port()?, free_port()?);
        let d = self.dir.join("nginx");
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let d_s = d.display();
        // Access logs off on every proxy: the shim logs none by default.
        let conf = format!(
            "worker_processes {w};
daemon off;
master_process on;
pid {d_s}/nginx.pid;
error_log {d_s}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d_s}/body;
  proxy_temp_path {d_s}/proxy;
  fastcgi_temp_path {d_s}/fastcgi;
  uwsgi_temp_path {d_s}/uwsgi;
  scgi_temp_path {d_s}/scgi;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{h1};
    listen 127.0.0.1:{h2} http2;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
            w = self.workers,
            up = self.upstream,
        );
        let path = d.join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p").arg(&d).arg("-c").arg(&path);
        let log = d.join("stderr.log");
        let p = Proc::spawn("nginx", &mut cmd, &log)?;
        let (h1, h2) = (addr(h1), addr(h2));
        listening_or_log(h1, &log)?;
        // The workers exist once the master listens; all of them count.
        let mut pids = vec![p.pid()];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while children_of(p.pid()).len() < usize::from(self.workers)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        pids.extend(children_of(p.pid()));
        Ok(Running {
            h1,
            h2,
            groups: vec![Group {
                name: "nginx".into(),
                pids,
            }],
            procs: vec![p],
        })
    }

    fn haproxy(&self) -> Result<Running, String> {
        let (h1, h2) = (free_port()?, free_port()?);
        let d = self.dir.join("haproxy");
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let conf = format!(
            "global
  nbthread {w}
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{h1}
  bind 127.0.0.1:{h2} proto h2
  default_backend be
backend be
  server up 127.0.0.1:{up}
",
            w = self.workers,
            up = self.upstream,
        );
        let path = d.join("haproxy.cfg");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        let log = d.join("stderr.log");
        let p = Proc::spawn("haproxy", &mut cmd, &log)?;
        listening_or_log(addr(h1), &log)?;
        Ok(Running {
            h1: addr(h1),
            h2: addr(h2),
            groups: vec![group("haproxy", &p)],
            procs: vec![p],
        })
    }
}

/// Waits for a proxy's port; when it never opens, the proxy's own words
/// (a config error, a limit) are the useful part of the failure.
fn listening_or_log(at: SocketAddr, log: &Path) -> Result<(), String> {
    wait_listening(at, Duration::from_secs(10)).map_err(|e| {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        format!("{e}; {}:\n{said}", log.display())
    })
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn group(name: &str, p: &Proc) -> Group {
    Group {
        name: name.into(),
        pids: vec![p.pid()],
    }
}
