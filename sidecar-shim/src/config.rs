//! The command line: every flag also as a `MESH_SHIM_*` environment
//! variable (a flag wins), ports defaulting to what Istio's sidecar uses.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `mesh-shim`: the mesh for an app in another language, beside it.
#[derive(Debug, Parser)]
#[command(name = "mesh-shim", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the shim beside an app: inbound, outbound, admin, metrics and
    /// readiness listeners.
    Run(Box<RunArgs>),
    /// Blocks until a shim on this host is ready (for `mesh-shim wait &&
    /// exec app`), exit 0; exit 1 when the timeout passes first.
    Wait(WaitArgs),
    /// Runs an ingress or egress gateway: the Istio `Gateway` servers that
    /// select this workload's labels, with the VirtualServices bound to
    /// them (local config only for now).
    Gateway(Box<GatewayArgs>),
    /// Installs the NAT rules that send the workload's TCP traffic through
    /// the shim (run as root in the workload's network namespace, before
    /// the app starts).
    Iptables(crate::iptables::IptablesArgs),
    /// The proxyless gRPC agent (Istio's `grpc-agent` template): writes
    /// the gRPC xDS bootstrap and the workload certificate files stock
    /// gRPC reads, keeps the certificate fresh, serves readiness.
    Agent(Box<crate::agent::AgentArgs>),
}

/// Who the workload is, where its config comes from and how it gets its
/// certificate: shared by `run` and `gateway`.
#[derive(Debug, Clone, Args)]
pub struct MeshArgs {
    /// meshd (or any ADS server) to get config from: `HOST:PORT` or a URL
    /// (`http://`, `https://`). Repeat or comma-separate for fallbacks.
    #[arg(
        long,
        env = "MESH_SHIM_XDS_ADDR",
        value_delimiter = ',',
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub xds_addr: Vec<String>,
    /// A directory (or file) of Istio YAML compiled in the shim instead.
    #[arg(long, env = "MESH_SHIM_CONFIG")]
    pub config: Option<PathBuf>,
    /// A MeshConfig file (local mode).
    #[arg(long, env = "MESH_SHIM_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// The workload's namespace.
    #[arg(long, env = "MESH_SHIM_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The workload's labels, `k=v,k2=v2` (as on its pod).
    #[arg(long, env = "MESH_SHIM_LABELS", value_parser = parse_labels, default_value = "")]
    pub labels: Labels,
    /// The workload's service account (its SPIFFE identity).
    #[arg(long, env = "MESH_SHIM_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// The workload (Deployment) name telemetry reports.
    #[arg(long, env = "MESH_SHIM_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// The mesh CA (meshd) to get the workload certificate from, `HOST:PORT`.
    #[arg(long, env = "MESH_SHIM_CA_ADDR")]
    pub ca_addr: Option<String>,
    /// PEM roots that verify the CA (and `https://` xDS servers).
    #[arg(long, env = "MESH_SHIM_CA_ROOT")]
    pub ca_root: Option<PathBuf>,
    /// The DNS name on the CA's certificate.
    #[arg(
        long,
        env = "MESH_SHIM_CA_SERVER_NAME",
        default_value = "meshd.istio-system.svc"
    )]
    pub ca_server_name: String,
    /// A file holding the CA's bootstrap token.
    #[arg(long, env = "MESH_SHIM_CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,
    /// Where to also write the certificate files the app may read
    /// (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
    #[arg(long, env = "MESH_SHIM_CERT_OUTPUT")]
    pub cert_output: Option<PathBuf>,
    /// A directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`
    /// (Istio's file-mounted certificates) instead of a CA.
    #[arg(long, env = "MESH_SHIM_CERT_DIR", conflicts_with = "ca_addr")]
    pub cert_dir: Option<PathBuf>,
    /// How long to wait for the first config (and certificate).
    #[arg(long, env = "MESH_SHIM_READY_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub ready_timeout: Duration,
}

/// `mesh-shim run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The workload, its config source and identity.
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// The app's port on 127.0.0.1: inbound requests go there. Without it
    /// the shim serves no inbound side.
    #[arg(long, env = "MESH_SHIM_APP_PORT")]
    pub app_port: Option<u16>,
    /// `LOCAL_PORT=HOST:PORT`: a listener on 127.0.0.1:LOCAL_PORT whose
    /// requests go to that mesh service (repeat, or comma-separate).
    #[arg(long = "upstream", env = "MESH_SHIM_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<UpstreamPort>,
    /// Serve inbound traffic redirected by `mesh-shim iptables`: each
    /// connection goes to 127.0.0.1 on the port the caller dialed (the
    /// app's own ports, as in a pod), unless --app-port is given.
    #[arg(long, env = "MESH_SHIM_CAPTURE_INBOUND")]
    pub capture_inbound: bool,
    /// Where the inbound listener binds (the pod's address).
    #[arg(long, env = "MESH_SHIM_INBOUND_ADDR", default_value = "0.0.0.0")]
    pub inbound_addr: IpAddr,
    /// Inbound listener port (0: any free port, printed at start).
    #[arg(long, env = "MESH_SHIM_INBOUND_PORT", default_value_t = 15006)]
    pub inbound_port: u16,
    /// Outbound listener port on 127.0.0.1: an explicit HTTP proxy
    /// (`HTTP_PROXY=http://127.0.0.1:15001`).
    #[arg(long, env = "MESH_SHIM_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Admin port on 127.0.0.1 (`/config_dump`, `/ready`, `/logging`,
    /// `/quitquitquit`, `/stats/prometheus`).
    #[arg(long, env = "MESH_SHIM_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Merged metrics port (`/stats/prometheus`), on the inbound address.
    #[arg(long, env = "MESH_SHIM_METRICS_PORT", default_value_t = 15020)]
    pub metrics_port: u16,
    /// Readiness port (`/healthz/ready`), on the inbound address.
    #[arg(long, env = "MESH_SHIM_READY_PORT", default_value_t = 15021)]
    pub ready_port: u16,
    /// How long a shutdown lets requests in flight finish (Istio's
    /// `terminationDrainDuration`).
    #[arg(long, env = "MESH_SHIM_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// How long a client may take to send request headers (slowloris bound).
    #[arg(long, env = "MESH_SHIM_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// Runtime worker threads (default: one per core; 1 runs tokio's
    /// current-thread scheduler, measurably cheaper). A sidecar shares
    /// its pod's CPU limit with the app, so it should not spin up a
    /// thread per host core; Istio's sidecar has `concurrency` for this.
    #[arg(long, env = "MESH_SHIM_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// `mesh-shim gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The gateway workload (labels such as `istio=ingressgateway`), its
    /// config and identity.
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Where the Gateway servers' ports bind.
    #[arg(long, env = "MESH_SHIM_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// `GATEWAY_PORT=LISTEN_PORT` pairs (`80=8080,443=8443`; 0 = any free
    /// port), for running unprivileged or side by side; unlisted ports
    /// bind as the Gateway says.
    #[arg(long = "port-map", env = "MESH_SHIM_PORT_MAP", value_delimiter = ',', value_parser = parse_port_pair)]
    pub port_map: Vec<(u16, u16)>,
    /// Admin port on 127.0.0.1.
    #[arg(long, env = "MESH_SHIM_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Merged metrics port (`/stats/prometheus`).
    #[arg(long, env = "MESH_SHIM_METRICS_PORT", default_value_t = 15020)]
    pub metrics_port: u16,
    /// Readiness port (`/healthz/ready`).
    #[arg(long, env = "MESH_SHIM_READY_PORT", default_value_t = 15021)]
    pub ready_port: u16,
    /// How long a shutdown lets requests in flight finish.
    #[arg(long, env = "MESH_SHIM_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Runtime worker threads (default: one per core; 1 runs tokio's
    /// current-thread scheduler).
    #[arg(long, env = "MESH_SHIM_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

fn parse_port_pair(s: &str) -> Result<(u16, u16), String> {
    let fix = "write --port-map GATEWAY_PORT=LISTEN_PORT, e.g. 443=8443";
    let (a, b) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} has no '='; {fix}"))?;
    let a = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port; {fix}"))?;
    let b = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port; {fix}"))?;
    Ok((a, b))
}

/// `mesh-shim wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The readiness URL to poll.
    #[arg(
        long,
        env = "MESH_SHIM_WAIT_URL",
        default_value = "http://127.0.0.1:15021/healthz/ready"
    )]
    pub url: String,
    /// Give up after this long.
    #[arg(long, env = "MESH_SHIM_WAIT_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// Time between polls.
    #[arg(long, env = "MESH_SHIM_WAIT_PERIOD", value_parser = parse_duration, default_value = "200ms")]
    pub period: Duration,
}

/// Workload labels in flag order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(String, String)>);

pub(crate) fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut out = Vec::new();
    for kv in s.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.push((k.trim().to_string(), v.trim().to_string()))
            }
            _ => {
                return Err(format!(
                    "label {kv:?} is not k=v; write --labels app=reviews,version=v1"
                ))
            }
        }
    }
    Ok(Labels(out))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_core::config::common::Duration::from_str(s)
        .map(|d| d.0)
        .map_err(|e| format!("{e}; write it like 500ms, 5s or 1m"))
}

/// An outbound listener for one mesh service: `9080=reviews:9080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPort {
    /// The port on 127.0.0.1 the app sends to.
    pub local_port: u16,
    /// The mesh authority requests are sent to (`host:port`).
    pub authority: String,
}

impl FromStr for UpstreamPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let fix = "write --upstream LOCAL_PORT=HOST:PORT, e.g. 9080=reviews:9080";
        let (local, target) = s
            .split_once('=')
            .ok_or_else(|| format!("upstream {s:?} has no '='; {fix}"))?;
        let local_port = local
            .trim()
            .parse()
            .map_err(|_| format!("upstream {s:?}: {local:?} is not a port; {fix}"))?;
        let target = target.trim();
        let port_ok = target
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "upstream {s:?}: {target:?} is not HOST:PORT; {fix}"
            ));
        }
        Ok(UpstreamPort {
            local_port,
            authority: target.to_string(),
        })
    }
}

impl RunArgs {
    /// The inbound listener's address.
    pub fn inbound(&self) -> SocketAddr {
        SocketAddr::new(self.inbound_addr, self.inbound_port)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upstream_ports_parse_and_bad_ones_say_how_to_fix_them() {
        let u: UpstreamPort = "9080=reviews:9080".parse().unwrap();
        assert_eq!(u.local_port, 9080);
        assert_eq!(u.authority, "reviews:9080");
        let e = "9080=reviews".parse::<UpstreamPort>().unwrap_err();
        assert!(
            e.contains("HOST:PORT") && e.contains("9080=reviews:9080"),
            "{e}"
        );
        assert!("reviews:9080"
            .parse::<UpstreamPort>()
            .unwrap_err()
            .contains("no '='"));
    }

    #[test]
    fn labels_parse_and_a_bad_label_is_named() {
        let l = parse_labels("app=reviews, version=v1").unwrap();
        assert_eq!(
            l.0,
            [
                ("app".into(), "reviews".into()),
                ("version".into(), "v1".into())
            ]
        );
        assert!(parse_labels("").unwrap().0.is_empty());
        assert!(parse_labels("app").unwrap_err().contains("\"app\""));
    }

    #[test]
    fn flags_have_istio_port_defaults_and_env_fallbacks() {
        let cli = Cli::try_parse_from(["mesh-shim", "run", "--config", "conf"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("run")
        };
        assert_eq!(
            (
                a.inbound_port,
                a.outbound_port,
                a.admin_port,
                a.metrics_port,
                a.ready_port
            ),
            (15006, 15001, 15000, 15020, 15021)
        );
        assert_eq!(a.drain_timeout, Duration::from_secs(5));
        assert_eq!(a.threads, None);
        // Neither a control plane nor a config directory: refused.
        assert!(Cli::try_parse_from(["mesh-shim", "run"]).is_err());
        assert!(
            Cli::try_parse_from(["mesh-shim", "run", "--config", "c", "--xds-addr", "x:1"])
                .is_err()
        );
    }

    #[test]
    fn gateway_flags_share_the_workload_flags_and_map_ports() {
        let cli = Cli::try_parse_from([
            "mesh-shim",
            "gateway",
            "--config",
            "c",
            "--labels",
            "istio=ingressgateway",
            "--port-map",
            "80=0,443=8443",
        ])
        .unwrap();
        let Command::Gateway(g) = cli.command else {
            panic!("gateway")
        };
        assert_eq!(g.mesh.labels.0, [("istio".into(), "ingressgateway".into())]);
        assert_eq!(g.port_map, [(80, 0), (443, 8443)]);
        let e = Cli::try_parse_from(["mesh-shim", "gateway", "--config", "c", "--port-map", "443"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("443=8443"), "{e}");
    }

    #[test]
    fn threads_is_a_positive_count() {
        let run = |extra: &[&str]| {
            let mut args = vec!["mesh-shim", "run", "--config", "c"];
            args.extend(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Run(a) => a.threads,
                _ => panic!("run"),
            })
        };
        assert_eq!(run(&["--threads", "1"]).unwrap(), Some(1));
        assert_eq!(run(&["--threads", "4"]).unwrap(), Some(4));
        // Zero workers would hang the runtime; refused at parse time.
        assert!(run(&["--threads", "0"]).is_err());
        assert!(run(&["--threads", "two"]).is_err());
    }
}
