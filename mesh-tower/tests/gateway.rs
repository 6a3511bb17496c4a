//! The SDK as an Istio ingress gateway, end to end on loopback: a gateway
//! `Mesh` in local mode over Istio YAML as users write it (bookinfo's
//! `bookinfo-gateway` with `selector: {istio: ingressgateway}` and
//! VirtualServices with `gateways: [bookinfo-gateway]`), real listeners,
//! real backends, real certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_test_support::backends::backend;
use mesh_test_support::configs::versioned_service;
use mesh_test_support::tls::{tls_server, ExtPki};
use mesh_tower::gateway::{BoundGateway, GatewayError, GatewayServer};
use mesh_tower::Mesh;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A running gateway: its listeners by Gateway port, the config directory
/// (to change the config) and the mesh (metrics).
struct Running {
    addrs: std::collections::BTreeMap<u16, SocketAddr>,
    dir: tempfile::TempDir,
    mesh: Mesh,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn addr(&self, port: u16) -> SocketAddr {
        *self.addrs.get(&port).expect("the Gateway port is bound")
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.await.unwrap().unwrap();
    }
}

/// The ingress gateway workload of Istio's samples, over `yaml`.
async fn start(yaml: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    let mesh = Mesh::local(dir.path())
        .namespace("istio-system")
        .labels([("istio", "ingressgateway"), ("app", "istio-ingressgateway")])
        .poll_interval(Duration::from_millis(50))
        .gateway()
        .build()
        .await
        .unwrap();
    let bound: BoundGateway = GatewayServer::new(&mesh)
        .drain_timeout(Duration::from_secs(2))
        .bind(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addrs = bound.local_addrs();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(bound.serve_with_shutdown(async move {
        let _ = rx.await;
    }));
    Running {
        addrs,
        dir,
        mesh,
        stop: Some(tx),
        served,
    }
}

/// Status, headers and body of one HTTP/1.1 GET over `io`.
async fn get_over<I>(
    io: I,
    host: &str,
    path: &str,
) -> Result<(u16, HeaderMap, String), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// A plaintext GET to the gateway listener at `addr`.
async fn get(addr: SocketAddr, host: &str, path: &str) -> (u16, HeaderMap, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    get_over(tcp, host, path).await.unwrap()
}

fn flags(h: &HeaderMap) -> &str {
    h.get(mesh_tower::RESPONSE_FLAGS_HEADER)
        .map_or("", |v| v.to_str().unwrap())
}

/// A TLS connection to `addr` with SNI `sni`, trusting `ca_pem`,
/// presenting `client` (chain, key) when given.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(mesh_ca::crypto::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// Bookinfo's gateway and VirtualService (plus routes to a second
/// service, and hosts to tell bound from unbound VirtualServices).
fn bookinfo(productpage: u16, reviews: u16) -> String {
    format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - bookinfo.example.com
    - unbound.example.com
  - port:
      number: 8081
      name: http-secure
      protocol: HTTP
    hosts:
    - secure.example.com
    tls:
      httpsRedirect: true
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
  namespace: default
spec:
  hosts:
  - bookinfo.example.com
  - elsewhere.example.com
  - secure.example.com
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
  - match:
    - uri:
        prefix: /reviews
    route:
    - destination:
        host: reviews
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: unbound-mesh
  namespace: default
spec:
  hosts:
  - unbound.example.com
  http:
  - route:
    - destination:
        host: productpage
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: unbound-other-gateway
  namespace: default
spec:
  hosts:
  - unbound.example.com
  gateways:
  - other-gateway
  http:
  - route:
    - destination:
        host: productpage
---
",
        versioned_service("productpage", "http", 9080, &[("v1", productpage)]),
        versioned_service("reviews", "http", 9080, &[("v1", reviews)]),
    )
}

#[tokio::test]
async fn http_routes_by_host_and_path_through_the_client_stack() {
    let (pp, rv) = (backend().await, backend().await);
    let gw = start(&bookinfo(pp.addr.port(), rv.addr.port())).await;
    let at = gw.addr(8080);

    let (status, h, body) = get(at, "bookinfo.example.com", "/productpage").await;
    assert_eq!((status, body.as_str()), (200, pp.addr.to_string().as_str()));
    // The backend sees the Host the client asked for.
    assert_eq!(h["x-host"], "bookinfo.example.com");
    let (status, _, body) = get(at, "bookinfo.example.com:8080", "/reviews/1").await;
    assert_eq!((status, body), (200, rv.addr.to_string()));

    // A path no rule matches: 404 NR from the route stage.
    let (status, h, _) = get(at, "bookinfo.example.com", "/admin").await;
    assert_eq!((status, flags(&h)), (404, "NR"));
    // A host no server of the port has, though the VirtualService lists it.
    let (status, h, _) = get(at, "elsewhere.example.com", "/productpage").await;
    assert_eq!((status, flags(&h)), (404, "NR"));
    // A host nothing names.
    let (status, h, _) = get(at, "nobody.example.org", "/productpage").await;
    assert_eq!((status, flags(&h)), (404, "NR"));

    // Istio's standard metrics, reported as a gateway reports them.
    let metrics = gw.mesh.metrics().render();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"200\"")
                && l.contains("destination_service=\"productpage.default.svc.cluster.local\"")
        })
        .unwrap_or_else(|| panic!("no productpage request series in\n{metrics}"));
    assert!(line.contains("reporter=\"source\""), "{line}");
    assert!(
        line.contains("source_workload_namespace=\"istio-system\""),
        "{line}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn virtual_services_not_bound_to_the_gateway_do_not_apply() {
    let (pp, rv) = (backend().await, backend().await);
    let gw = start(&bookinfo(pp.addr.port(), rv.addr.port())).await;
    // unbound.example.com is a server host, but its VirtualServices are
    // bound to `mesh` and to another gateway.
    let (status, h, _) = get(gw.addr(8080), "unbound.example.com", "/").await;
    assert_eq!((status, flags(&h)), (404, "NR"));
    assert_eq!(pp.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_new_virtual_service_applies_to_the_next_request_on_the_same_listener() {
    let (pp, rv) = (backend().await, backend().await);
    let gw = start(&bookinfo(pp.addr.port(), rv.addr.port())).await;
    let at = gw.addr(8080);
    assert_eq!(get(at, "unbound.example.com", "/").await.0, 404);
    std::fs::write(
        gw.dir.path().join("bound.yaml"),
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: now-bound, namespace: default}
spec:
  hosts: [unbound.example.com]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {host: reviews}
",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(at, "unbound.example.com", "/").await;
        if status == 200 {
            assert_eq!(body, rv.addr.to_string());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new VirtualService never applied (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.addr(8080), at, "the listener was not rebound");
    gw.shutdown().await;
}

#[tokio::test]
async fn https_redirect_answers_301_to_https() {
    let (pp, rv) = (backend().await, backend().await);
    let gw = start(&bookinfo(pp.addr.port(), rv.addr.port())).await;
    let (status, h, _) = get(gw.addr(8081), "secure.example.com", "/productpage?x=1").await;
    assert_eq!(status, 301);
    assert_eq!(h["location"], "https://secure.example.com/productpage?x=1");
    assert_eq!(pp.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    gw.shutdown().await;
}

/// Certificates for `names` in `dir` from `pki`: (chain path, key path).
fn leaf_files(pki: &ExtPki, dir: &Path, prefix: &str, names: &[&str]) -> (String, String) {
    let (_, cert, key) = pki.write(dir, prefix, names);
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test]
async fn https_simple_sni_chooses_between_two_servers_on_one_port() {
    let (a, b) = (backend().await, backend().await);
    let certs = tempfile::tempdir().unwrap();
    let pki = ExtPki::new("edge CA");
    let (a_cert, a_key) = leaf_files(&pki, certs.path(), "a", &["a.example.com"]);
    let (b_cert, b_key) = leaf_files(&pki, certs.path(), "b", &["b.example.com"]);
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {a_cert}, privateKey: {a_key}}}
  - port: {{number: 443, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {b_cert}, privateKey: {b_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: sites, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{authority: {{exact: a.example.com}}}}]
    route: [{{destination: {{host: site-a, port: {{number: 80}}}}}}]
  - route: [{{destination: {{host: site-b, port: {{number: 80}}}}}}]
",
        versioned_service("site-a", "http", 80, &[("v1", a.addr.port())]),
        versioned_service("site-b", "http", 80, &[("v1", b.addr.port())]),
    );
    let gw = start(&yaml).await;
    let at = gw.addr(443);
    let ca = pki.ca_pem();
    // rustls checks that the certificate names the SNI: each handshake
    // succeeding proves the server the SNI chose presented its own.
    let tls = tls_connect(at, "a.example.com", &ca, None).await.unwrap();
    let (status, _, body) = get_over(tls, "a.example.com", "/").await.unwrap();
    assert_eq!((status, body), (200, a.addr.to_string()));
    let tls = tls_connect(at, "b.example.com", &ca, None).await.unwrap();
    let (status, _, body) = get_over(tls, "b.example.com", "/").await.unwrap();
    assert_eq!((status, body), (200, b.addr.to_string()));
    // Server a's routes serve a's hosts only.
    let tls = tls_connect(at, "a.example.com", &ca, None).await.unwrap();
    let (status, h, _) = get_over(tls, "b.example.com", "/").await.unwrap();
    assert_eq!((status, flags(&h)), (404, "NR"));
    // An SNI no server has: the connection is closed, nothing answered.
    assert!(tls_connect(at, "c.example.com", &ca, None).await.is_err());
    gw.shutdown().await;
}

#[tokio::test]
async fn mutual_refuses_a_client_without_a_certificate_and_accepts_one_with() {
    let site = backend().await;
    let certs = tempfile::tempdir().unwrap();
    let server_pki = ExtPki::new("edge CA");
    let client_pki = ExtPki::new("partner CA");
    let (cert, key) = leaf_files(&server_pki, certs.path(), "mtls", &["mtls.example.com"]);
    let client_ca = certs.path().join("clients-ca.pem");
    std::fs::write(&client_ca, client_pki.ca_pem()).unwrap();
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: {cert}
      privateKey: {key}
      caCertificates: {ca}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: site, namespace: default}}
spec:
  hosts: [mtls.example.com]
  gateways: [bookinfo-gateway]
  http:
  - route: [{{destination: {{host: site}}}}]
",
        versioned_service("site", "http", 80, &[("v1", site.addr.port())]),
        ca = client_ca.display(),
    );
    let gw = start(&yaml).await;
    let at = gw.addr(443);
    let ca = server_pki.ca_pem();

    // Without a certificate: the handshake or the first exchange fails.
    let refused = match tls_connect(at, "mtls.example.com", &ca, None).await {
        Err(_) => true,
        Ok(tls) => get_over(tls, "mtls.example.com", "/").await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    // With a certificate of another CA: refused too.
    let (stranger_cert, stranger_key) = server_pki.leaf(&["client.example.com"]);
    let refused = match tls_connect(
        at,
        "mtls.example.com",
        &ca,
        Some((&stranger_cert, &stranger_key)),
    )
    .await
    {
        Err(_) => true,
        Ok(tls) => get_over(tls, "mtls.example.com", "/").await.is_err(),
    };
    assert!(refused, "a client certificate of another CA was accepted");
    assert_eq!(site.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let (client_cert, client_key) = client_pki.leaf(&["client.example.com"]);
    let tls = tls_connect(
        at,
        "mtls.example.com",
        &ca,
        Some((&client_cert, &client_key)),
    )
    .await
    .unwrap();
    let (status, _, body) = get_over(tls, "mtls.example.com", "/").await.unwrap();
    assert_eq!((status, body), (200, site.addr.to_string()));
    gw.shutdown().await;
}

#[tokio::test]
async fn passthrough_routes_by_sni_to_a_backend_that_terminates_tls() {
    let pki = ExtPki::new("database CA");
    let (db_cert, db_key) = pki.leaf(&["db.example.com"]);
    let (db_addr, seen) = tls_server(&db_cert, &db_key, None, "db").await;
    let (web_cert, web_key) = pki.leaf(&["web.example.com"]);
    let (web_addr, _) = tls_server(&web_cert, &web_key, None, "web").await;
    let yaml = format!(
        "{}{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: ['*.example.com']
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: passthrough, namespace: default}}
spec:
  hosts: [db.example.com, web.example.com]
  gateways: [bookinfo-gateway]
  tls:
  - match:
    - port: 443
      sniHosts: [db.example.com]
    route:
    - destination: {{host: db, port: {{number: 5443}}}}
  - match:
    - sniHosts: [web.example.com]
    route:
    - destination: {{host: web}}
",
        versioned_service("db", "tls", 5443, &[("v1", db_addr.port())]),
        versioned_service("web", "https", 443, &[("v1", web_addr.port())]),
    );
    let gw = start(&yaml).await;
    let at = gw.addr(443);
    let ca = pki.ca_pem();
    // The backend's own certificate verifies: the gateway did not
    // terminate, it forwarded the handshake.
    let tls = tls_connect(at, "db.example.com", &ca, None).await.unwrap();
    let (status, _, body) = get_over(tls, "db.example.com", "/").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "tls-ok client-cert=no body=db")
    );
    assert_eq!(
        seen.sni.lock().unwrap().as_slice(),
        [Some("db.example.com".to_string())]
    );
    let tls = tls_connect(at, "web.example.com", &ca, None).await.unwrap();
    let (_, _, body) = get_over(tls, "web.example.com", "/").await.unwrap();
    assert_eq!(body, "tls-ok client-cert=no body=web");
    // An SNI of the server's hosts that no tls route names: closed.
    assert!(tls_connect(at, "other.example.com", &ca, None)
        .await
        .is_err());
    // Istio's TCP metrics for the passthrough connections.
    let metrics = gw.mesh.metrics().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"db.default.svc.cluster.local\"")),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_mesh_workload_is_not_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), bookinfo(1, 2)).unwrap();
    let mesh = Mesh::local(dir.path())
        .namespace("istio-system")
        .labels([("istio", "ingressgateway")])
        .build()
        .await
        .unwrap();
    let err = GatewayServer::new(&mesh)
        .bind(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::NotAGateway), "{err}");
    assert!(err.to_string().contains("MeshBuilder::gateway()"));
}

#[tokio::test]
async fn a_server_with_a_credential_name_is_not_served_and_the_others_are() {
    let pp = backend().await;
    let yaml = format!(
        "{}
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [bookinfo.example.com]
    tls: {{mode: SIMPLE, credentialName: bookinfo-credential}}
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [bookinfo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http:
  - route: [{{destination: {{host: productpage}}}}]
",
        versioned_service("productpage", "http", 9080, &[("v1", pp.addr.port())]),
    );
    let gw = start(&yaml).await;
    assert!(!gw.addrs.contains_key(&443), "{:?}", gw.addrs);
    let model = gw.mesh.current();
    let errors = &model.gateway.as_ref().unwrap().errors;
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.contains("default/bookinfo-gateway")
            && text.contains("mesh.yaml:")
            && text.contains("spec.servers[0].tls.credentialName")
            && text.contains("not served"),
        "{text}"
    );
    let (status, _, body) = get(gw.addr(8080), "bookinfo.example.com", "/").await;
    assert_eq!((status, body), (200, pp.addr.to_string()));
    gw.shutdown().await;
}
