//! The client-side interop scenario: backends, the Istio YAML that routes
//! to them, a control plane serving it, and one check per feature, each run
//! by a stock client (Python or Node) and asserted from its report.
//!
//! Every check also asserts that the client never NACKed: a stock client
//! rejecting a resource we encoded is an encoder bug, not a flaky test.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::backend::{Backend, Behavior};
use crate::clients::{write_bootstrap, Report, Tool};
use crate::control::{write_yaml, yaml_dir, ControlPlane};
use crate::HarnessError;

/// Namespace of the scenario's services and clients.
pub const NAMESPACE: &str = "interop";
/// Slowest client run allowed (each run is bounded by this).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Backends, config, control plane and a client bootstrap.
pub struct Scenario {
    /// The control plane.
    pub control: ControlPlane,
    /// Backends by name.
    pub backends: Vec<Backend>,
    /// Client bootstrap (`meshctl bootstrap grpc` output).
    pub bootstrap: PathBuf,
    config_dir: TempDir,
    _scratch: TempDir,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("control", &self.control)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

const BACKENDS: &[(&str, Behavior)] = &[
    ("v1", Behavior::Ok),
    ("v2", Behavior::Ok),
    ("flaky", Behavior::FailFirstAttempt),
    ("slow", Behavior::Slow(Duration::from_secs(1))),
    ("h1", Behavior::Ok),
    ("h2", Behavior::Ok),
    ("h3", Behavior::Ok),
];

/// The Istio config of the scenario; `port(name)` is backend `name`'s port.
/// `shifted` moves service `live` from subset v1 to v2.
pub fn config(port: impl Fn(&str) -> u16, shifted: bool) -> String {
    let se = |name: &str, endpoints: &[(&str, &str)]| {
        let eps: String = endpoints
            .iter()
            .map(|(b, version)| {
                format!(
                    "  - {{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{app: {name}, version: {version}}}}}\n",
                    port(b)
                )
            })
            .collect();
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  hosts: [{name}.{NAMESPACE}.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
{eps}---
"
        )
    };
    let mut y = String::new();
    y += &se("echo", &[("v1", "v1"), ("v2", "v2")]);
    y += &se("live", &[("v1", "v1"), ("v2", "v2")]);
    y += &format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: weighted, namespace: {NAMESPACE}}}
spec:
  hosts: [weighted.{NAMESPACE}.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {}}}, locality: us-east/us-east-1a, weight: 3}}
  - {{address: 127.0.0.1, ports: {{grpc: {}}}, locality: us-west/us-west-1b, weight: 1}}
---
",
        port("v1"),
        port("v2")
    );
    let live = if shifted { "v2" } else { "v1" };
    y += &format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: live, namespace: {NAMESPACE}}}
spec:
  host: live.{NAMESPACE}.test
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: live, namespace: {NAMESPACE}}}
spec:
  hosts: [live.{NAMESPACE}.test]
  http:
  - route: [{{destination: {{host: live.{NAMESPACE}.test, subset: {live}}}}}]
---
"
    );
    y += &se("retry", &[("flaky", "v1")]);
    y += &se("noretry", &[("flaky", "v1")]);
    y += &se("slow", &[("slow", "v1")]);
    y += &se("slowok", &[("slow", "v1")]);
    y += &se("fault", &[("v1", "v1")]);
    y += &se("hash", &[("h1", "v1"), ("h2", "v1"), ("h3", "v1")]);
    y += &format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: kitchen, namespace: {NAMESPACE}}}
spec:
  hosts: [kitchen.{NAMESPACE}.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{version: v1}}, locality: us-east/us-east-1a, weight: 3}}
  - {{address: 127.0.0.1, ports: {{grpc: {}}}, labels: {{version: v2}}, locality: us-west/us-west-1b}}
---
",
        port("v1"),
        port("v2")
    );
    y += "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: interop}
spec:
  host: echo.interop.test
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: interop}
spec:
  hosts: [echo.interop.test]
  http:
  - name: canary-header
    match: [{headers: {x-canary: {exact: \"yes\"}}}]
    route: [{destination: {host: echo.interop.test, subset: v2}}]
  - name: split
    route:
    - {destination: {host: echo.interop.test, subset: v1}, weight: 80}
    - {destination: {host: echo.interop.test, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retry, namespace: interop}
spec:
  hosts: [retry.interop.test]
  http:
  - route: [{destination: {host: retry.interop.test}}]
    retries: {attempts: 3, retryOn: unavailable}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: noretry, namespace: interop}
spec:
  hosts: [noretry.interop.test]
  http:
  - route: [{destination: {host: noretry.interop.test}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow, namespace: interop}
spec:
  hosts: [slow.interop.test]
  http:
  - route: [{destination: {host: slow.interop.test}}]
    timeout: 0.2s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fault, namespace: interop}
spec:
  hosts: [fault.interop.test]
  http:
  - match: [{headers: {x-fault: {exact: abort-grpc}}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
    route: [{destination: {host: fault.interop.test}}]
  - match: [{headers: {x-fault: {exact: abort-http}}}]
    fault: {abort: {httpStatus: 403, percentage: {value: 100}}}
    route: [{destination: {host: fault.interop.test}}]
  - match: [{headers: {x-fault: {exact: half}}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}
    route: [{destination: {host: fault.interop.test}}]
    retries: {attempts: 0}
  - match: [{headers: {x-fault: {exact: delay}}}]
    fault: {delay: {fixedDelay: 0.3s, percentage: {value: 100}}}
    route: [{destination: {host: fault.interop.test}}]
  - route: [{destination: {host: fault.interop.test}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: kitchen, namespace: interop}
spec:
  host: kitchen.interop.test
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 50, connectTimeout: 2s}
      http: {http2MaxRequests: 100, maxRetries: 5, http1MaxPendingRequests: 10}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: kitchen, namespace: interop}
spec:
  hosts: [kitchen.interop.test]
  http:
  - name: redirect
    match: [{headers: {x-redirect: {exact: '1'}}}]
    redirect: {uri: /elsewhere, authority: other.example.com}
  - name: everything
    match:
    - uri: {prefix: /echo.Echo/}
      headers: {x-absent: {regex: 'nev.r'}}
    - uri: {regex: '/echo\\.Echo/.*'}
      withoutHeaders: {x-skip: {exact: '1'}}
    headers:
      request: {set: {x-mesh: '1'}, add: {x-trace: on}, remove: [x-drop]}
      response: {set: {x-served-by: mesh}}
    retries: {attempts: 2, perTryTimeout: 2s, retryOn: 'unavailable,cancelled,5xx,reset'}
    timeout: 5s
    mirror: {host: kitchen.interop.test, subset: v2}
    mirrorPercentage: {value: 10}
    route:
    - {destination: {host: kitchen.interop.test, subset: v1}, weight: 50}
    - {destination: {host: kitchen.interop.test, subset: v2}, weight: 50, headers: {request: {set: {x-subset: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash, namespace: interop}
spec:
  host: hash.interop.test
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
---
# The stock client's own identity has a Telemetry policy: meshd compiles
# it, and sends it only to our SDK (a reserved listener), never to a stock
# client, which would have nothing to do with it; the no-NACK check of
# every run holds that.
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: interop-client, namespace: interop}
spec:
  selector: {matchLabels: {app: interop-client}}
  metrics:
  - overrides: [{match: {metric: REQUEST_COUNT, mode: CLIENT}, disabled: true}]
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: 'response.code >= 400'}
  tracing:
  - randomSamplingPercentage: 10
";
    y
}

fn port_of(backends: &[Backend], name: &str) -> u16 {
    backends
        .iter()
        .find(|b| b.name() == name)
        .map_or(0, Backend::port)
}

impl Scenario {
    /// Rewrites the config with service `live` moved to subset v2 and
    /// pushes it to every connected client.
    pub async fn shift_live(&self) -> Result<(), HarnessError> {
        let yaml = config(|name| port_of(&self.backends, name), true);
        write_yaml(self.config_dir.path(), &yaml)?;
        self.control.reload(self.config_dir.path()).await
    }

    /// Starts the backends and the control plane, and writes the client
    /// bootstrap.
    pub async fn start() -> Result<Self, HarnessError> {
        let mut backends = Vec::new();
        for (name, behavior) in BACKENDS {
            backends.push(Backend::start(name, *behavior).await?);
        }
        let yaml = config(|name| port_of(&backends, name), false);
        let config = yaml_dir(&yaml)?;
        let control = ControlPlane::start(config.path()).await?;
        let scratch =
            tempfile::tempdir().map_err(|e| HarnessError::io("creating a temp dir", e))?;
        let bootstrap = write_bootstrap(
            scratch.path(),
            "client",
            control.xds_addr(),
            &[
                "--namespace",
                NAMESPACE,
                "--labels",
                "app=interop-client",
                "--workload-name",
                "interop-client",
            ],
        )?;
        Ok(Self {
            control,
            backends,
            bootstrap,
            config_dir: config,
            _scratch: scratch,
        })
    }

    /// Backend `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// Runs the client against `xds:///{service}.interop.test:7070`.
    pub async fn run(
        &self,
        tool: &Tool,
        service: &str,
        count: u32,
        extra: &[&str],
    ) -> Result<Report, HarnessError> {
        let mut args = vec![
            "--target".to_string(),
            format!("xds:///{service}.{NAMESPACE}.test:7070"),
            "--count".to_string(),
            count.to_string(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        let report = self
            .control
            .run_checked(tool, &self.bootstrap, &args)
            .await?;
        Ok(report)
    }
}

impl ControlPlane {
    /// Runs a client and fails if any node NACKed something meanwhile.
    pub async fn run_checked(
        &self,
        tool: &Tool,
        bootstrap: &std::path::Path,
        args: &[String],
    ) -> Result<Report, HarnessError> {
        let result = tool.run_client(bootstrap, args, RUN_TIMEOUT).await;
        // A NACK explains a hung or failing client better than its own
        // error, so it is reported first.
        let nacks = self.nacks();
        if !nacks.is_empty() || self.nack_count() > 0 {
            return Err(HarnessError::Script {
                script: format!("{:?} client", tool.lang()),
                message: format!(
                    "the client NACKed our resources ({} NACKs): {nacks:?}; the run itself: {}",
                    self.nack_count(),
                    result
                        .as_ref()
                        .map_or_else(ToString::to_string, |_| "finished".into())
                ),
            });
        }
        result
    }
}
