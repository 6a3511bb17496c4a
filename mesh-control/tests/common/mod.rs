//! Test helpers: a temp directory of Istio YAML, meshd on loopback port 0,
//! a real ADS client (envoy-types' tonic client) that speaks SotW like a
//! gRPC xDS client, and a plain HTTP/1.1 GET.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod kube;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mesh_control::{Meshd, MeshdConfig, MeshdHandle};
use mesh_xds::pb::envoy::config::cluster::v3::Cluster;
use mesh_xds::pb::envoy::config::core::v3::Node;
use mesh_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_xds::pb::envoy::config::listener::v3::Listener;
use mesh_xds::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use mesh_xds::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use mesh_xds::pb::google::protobuf::{value::Kind, Struct, Value};
use mesh_xds::types::{self, unany};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Namespace `demo`: two Kubernetes Services with WorkloadEntry endpoints,
/// a VirtualService visible only in `demo`, and an external ServiceEntry.
pub const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  selector: {app: echo}
  ports:
  - {name: grpc, port: 7070, appProtocol: grpc}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 8080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-1, namespace: demo}
spec:
  address: 10.0.0.1
  labels: {app: echo, version: v1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: demo}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
"#;

/// A VirtualService for web, exported to its own namespace only.
pub fn web_vs(timeout: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: demo}}
spec:
  hosts: [web]
  exportTo: ["."]
  http:
  - timeout: {timeout}
    route:
    - destination: {{host: web}}
"#
    )
}

pub const ECHO_EDS: &str = "outbound|7070||echo.demo.svc.cluster.local";
pub const WEB_RDS: &str = "outbound|8080||web.demo.svc.cluster.local";

/// Writes the standard config into `dir`.
pub fn write_config(dir: &Path) {
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.join("web-vs.yaml"), web_vs("5s")).unwrap();
}

/// meshd over `dir` with a fast watcher.
pub async fn start(dir: &Path) -> MeshdHandle {
    let mut c = MeshdConfig::new(dir);
    c.poll_interval = Duration::from_millis(50);
    c.debounce = Duration::from_millis(50);
    Meshd::start(c).await.expect("meshd starts")
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}

/// A node with Istio metadata.
pub fn node(id: &str, namespace: &str, labels: &[(&str, &str)], extra: &[(&str, &str)]) -> Node {
    let mut l = Struct::default();
    for (k, v) in labels {
        l.fields.insert((*k).into(), s(v));
    }
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s(namespace));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(l)),
        },
    );
    for (k, v) in extra {
        md.fields.insert((*k).into(), s(v));
    }
    Node {
        id: id.into(),
        metadata: Some(md),
        ..Default::default()
    }
}

/// One ADS stream.
pub struct Ads {
    pub node: Node,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
    /// Last response per type.
    pub last: BTreeMap<String, DiscoveryResponse>,
    first: bool,
}

impl Ads {
    pub async fn connect(addr: SocketAddr, node: Node) -> Ads {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Ads {
            node,
            tx,
            rx,
            last: BTreeMap::new(),
            first: true,
        }
    }

    pub async fn send(&mut self, type_url: &str, names: &[String], version: &str, nonce: &str) {
        let node = if self.first {
            Some(self.node.clone())
        } else {
            None
        };
        self.first = false;
        self.tx
            .send(DiscoveryRequest {
                node,
                type_url: type_url.into(),
                resource_names: names.to_vec(),
                version_info: version.into(),
                response_nonce: nonce.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Sends a request as built by the caller.
    pub async fn send_raw(&mut self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        let r = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response in time")
            .unwrap()
            .expect("stream open");
        self.last.insert(r.type_url.clone(), r.clone());
        r
    }

    /// Receives one response and ACKs it with the same subscription.
    pub async fn recv_ack(&mut self, names: &[String]) -> DiscoveryResponse {
        let r = self.recv().await;
        self.send(&r.type_url.clone(), names, &r.version_info, &r.nonce)
            .await;
        r
    }

    /// Asserts nothing arrives for a while.
    pub async fn silent(&mut self, ms: u64) {
        let r = tokio::time::timeout(Duration::from_millis(ms), self.rx.message()).await;
        assert!(
            r.is_err(),
            "{}: unexpected push: {:?}",
            self.node.id,
            r.map(|m| m.map(|x| x.map(|y| (y.type_url, y.version_info))))
        );
    }

    /// Subscribes to everything as a gRPC client would (CDS and LDS
    /// wildcard, then EDS and RDS by the names they reference), ACKing all.
    pub async fn sync_all(&mut self) {
        self.send(types::CLUSTER, &[], "", "").await;
        let cds = self.recv_ack(&[]).await;
        let eds_names = eds_names(&cds);
        self.send(types::ENDPOINT, &eds_names, "", "").await;
        self.recv_ack(&eds_names).await;
        self.send(types::LISTENER, &[], "", "").await;
        let lds = self.recv_ack(&[]).await;
        let rds_names = rds_names(&lds);
        self.send(types::ROUTE, &rds_names, "", "").await;
        self.recv_ack(&rds_names).await;
    }

    pub fn version(&self, type_url: &str) -> String {
        self.last[type_url].version_info.clone()
    }
}

pub fn clusters(r: &DiscoveryResponse) -> Vec<Cluster> {
    r.resources.iter().map(|a| unany(a).unwrap()).collect()
}

pub fn eds_names(cds: &DiscoveryResponse) -> Vec<String> {
    clusters(cds)
        .into_iter()
        .filter(|c| c.eds_cluster_config.is_some())
        .map(|c| c.name)
        .collect()
}

pub fn rds_names(lds: &DiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = lds
        .resources
        .iter()
        .filter_map(|a| {
            let l: Listener = unany(a)?;
            let api = l.api_listener?.api_listener?;
            let hcm: HttpConnectionManager = unany(&api)?;
            match hcm.route_specifier? {
                RouteSpecifier::Rds(r) => Some(r.route_config_name),
                _ => None,
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn routes(r: &DiscoveryResponse) -> Vec<RouteConfiguration> {
    r.resources.iter().map(|a| unany(a).unwrap()).collect()
}

/// Endpoint addresses per cluster in an EDS response.
pub fn endpoints(r: &DiscoveryResponse) -> BTreeMap<String, Vec<String>> {
    use mesh_xds::pb::envoy::config::core::v3::address::Address;
    use mesh_xds::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    r.resources
        .iter()
        .map(|a| {
            let cla: ClusterLoadAssignment = unany(a).unwrap();
            let addrs = cla
                .endpoints
                .iter()
                .flat_map(|l| l.lb_endpoints.iter())
                .filter_map(|e| match e.host_identifier.as_ref()? {
                    HostIdentifier::Endpoint(ep) => match ep.address.as_ref()?.address.as_ref()? {
                        Address::SocketAddress(sa) => Some(format!(
                            "{}:{}",
                            sa.address,
                            match sa.port_specifier {
                                Some(mesh_xds::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                                _ => 0,
                            }
                        )),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            (cla.cluster_name, addrs)
        })
        .collect()
}

/// `GET path` over HTTP/1.1; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: meshd\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// GET a JSON view.
pub async fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `f` until it is true (bounded).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Parses Prometheus text: metric line (name with labels) -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {l:?}"));
            (
                k.to_string(),
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

/// A gRPC channel to meshd's TLS port at `addr`, verifying it with `roots`
/// and the name `localhost`, presenting `cert` if given.
pub async fn secure_channel(
    addr: SocketAddr,
    roots: mesh_ca::TrustBundle,
    cert: Option<std::sync::Arc<mesh_ca::WorkloadCertificate>>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let tls = mesh_ca::tls::control_plane_client_config(
        cert.map(|c| tokio::sync::watch::channel(c).1),
        tokio::sync::watch::channel(std::sync::Arc::new(roots)).1,
    )
    .unwrap();
    let tls = std::sync::Arc::new(tls);
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect("localhost".try_into().unwrap(), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
}
