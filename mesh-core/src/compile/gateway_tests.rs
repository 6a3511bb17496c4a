//! Gateway compilation from YAML as Istio users write it (bookinfo's
//! gateway and VirtualService, HTTPS and PASSTHROUGH servers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::compile::Compiler;
use crate::config::common::Labels;
use crate::config::{load_str, MeshConfig};
use crate::model::gateway::{PortKind, ServerTlsMode, TlsVersion};
use crate::model::{Client, Model};
use crate::route::{Action, RequestInfo};

fn compile_for(yaml: &str, client: &Client) -> Model {
    let loaded = load_str(yaml, "gw.yaml");
    assert!(loaded.is_ok(), "{:#?}", loaded.errors);
    Compiler::new(loaded.resources, MeshConfig::default()).compile(client)
}

fn ingress() -> Client {
    let labels: Labels = [("istio".to_string(), "ingressgateway".to_string())]
        .into_iter()
        .collect();
    Client::gateway("istio-system", labels)
}

const BOOKINFO: &str = "
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ['*']
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    route:
    - destination: {host: productpage}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage-mesh, namespace: default}
spec:
  hosts: [productpage]
  http:
  - route:
    - destination: {host: productpage, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
";

fn get<'a>(path: &'a str, host: &'a str) -> RequestInfo<'a> {
    static NO_HEADERS: Vec<(String, String)> = Vec::new();
    RequestInfo {
        method: "GET",
        path,
        authority: host,
        scheme: "http",
        port: Some(8080),
        headers: &NO_HEADERS,
    }
}

#[test]
fn bookinfo_gateway_selects_the_ingress_and_binds_its_virtual_service() {
    let m = compile_for(BOOKINFO, &ingress());
    assert_eq!(m.client.gateways, ["default/bookinfo-gateway"]);
    assert!(!m.client.is_mesh());
    let gw = m.gateway.as_deref().expect("a gateway model");
    assert_eq!(gw.gateways, ["default/bookinfo-gateway"]);
    assert!(gw.errors.is_empty(), "{:?}", gw.errors);
    assert_eq!(gw.ports.keys().copied().collect::<Vec<_>>(), [8080]);
    let port = &gw.ports[&8080];
    assert_eq!(port.kind, PortKind::Http);
    assert_eq!(port.http_routes.as_deref(), Some("http.8080"));
    let routes = gw.routes("http.8080").unwrap();
    let vh = routes.virtual_host("anything.example").unwrap();
    assert_eq!(vh.domain, "*");
    assert_eq!(
        vh.routes.virtual_service.as_deref(),
        Some("default/bookinfo")
    );
    let route = vh.routes.route(&get("/productpage", "x")).unwrap();
    let d = &route.destinations()[0];
    assert_eq!(d.host, "productpage.default.svc.cluster.local");
    // The destination names no port: the service's only one.
    assert_eq!(d.port, Some(9080));
    assert!(vh.routes.route(&get("/other", "x")).is_none());
    // The mesh VirtualService does not apply to the gateway's outbound
    // routes either: the gateway is not a mesh workload.
    let out = m
        .outbound_for("productpage.default.svc.cluster.local", 9080)
        .unwrap();
    assert_ne!(
        out.routes.virtual_service.as_deref(),
        Some("default/productpage-mesh")
    );
}

#[test]
fn mesh_workloads_have_no_gateway_model() {
    let m = compile_for(BOOKINFO, &Client::new("default", Labels::new()));
    assert!(m.gateway.is_none());
    assert!(m.client.is_mesh());
    // And the gateway-only VirtualService does not bind them.
    let out = m
        .outbound_for("productpage.default.svc.cluster.local", 9080)
        .unwrap();
    assert_eq!(
        out.routes.virtual_service.as_deref(),
        Some("default/productpage-mesh")
    );
}

#[test]
fn a_gateway_workload_selected_by_nothing_serves_nothing() {
    let m = compile_for(BOOKINFO, &Client::gateway("istio-system", Labels::new()));
    let gw = m.gateway.as_deref().unwrap();
    // An empty selector would select it; these Gateways have selectors.
    assert!(gw.gateways.is_empty() && gw.ports.is_empty());
    assert!(!m.client.is_mesh());
}

const HOSTS: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['shop/web.example.com', './admin.example.com']
    tls: {httpsRedirect: true}
  - port: {number: 80, name: http-api, protocol: HTTP}
    hosts: [api.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*/internal.example.com']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.example.com, api.example.com]
  gateways: [istio-system/public]
  http:
  - match: [{port: 80}]
    route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 8000}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: admin, namespace: shop}
spec:
  hosts: [admin.example.com]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: admin.shop.svc.cluster.local, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong-gateway, namespace: shop}
spec:
  hosts: [internal.example.com]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: internal.shop.svc.cluster.local, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: internal, namespace: shop}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/internal]
  http:
  - match: [{port: 81}]
    route: [{destination: {host: never.shop.svc.cluster.local, port: {number: 80}}}]
  - route: [{destination: {host: internal.shop.svc.cluster.local, port: {number: 80}}}]
";

#[test]
fn server_hosts_bound_virtual_services_and_namespaces_make_the_domains() {
    let m = compile_for(HOSTS, &ingress());
    assert_eq!(
        m.client.gateways,
        ["istio-system/internal", "istio-system/public"]
    );
    let gw = m.gateway.as_deref().unwrap();
    assert!(gw.errors.is_empty(), "{:?}", gw.errors);
    let port = &gw.ports[&80];
    assert_eq!(port.servers.len(), 3);
    let routes = gw.routes("http.80").unwrap();
    let mut domains: Vec<(&str, bool, Option<&str>)> = routes
        .virtual_hosts
        .iter()
        .map(|v| {
            (
                v.domain.as_str(),
                v.https_redirect,
                v.routes.virtual_service.as_deref(),
            )
        })
        .collect();
    domains.sort();
    assert_eq!(
        domains,
        [
            // From `public`'s second server, without httpsRedirect.
            ("api.example.com", false, Some("shop/web")),
            // `internal`'s wildcard intersected with its server host.
            ("internal.example.com", false, Some("shop/internal")),
            // From the first, with it.
            ("web.example.com", true, Some("shop/web")),
        ],
        "admin.example.com is only admitted from istio-system (./), so shop/admin is not served"
    );
    let internal = routes.virtual_host("internal.example.com").unwrap();
    // The port-81 rule is dropped on port 80; shop/wrong-gateway is bound
    // to `public`, whose servers do not have that host.
    assert_eq!(internal.routes.routes.len(), 1);
    assert_eq!(
        internal.routes.routes[0].destinations()[0].host,
        "internal.shop.svc.cluster.local"
    );
    assert!(routes.virtual_host("admin.example.com").is_none());
    assert!(routes.virtual_host("unknown.org").is_none());
}

fn write_tls_yaml(dir: &std::path::Path) -> String {
    let p = |n: &str| dir.join(n).display().to_string();
    format!(
        "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {a_cert}, privateKey: {a_key}, minProtocolVersion: TLSV1_3}}
  - port: {{number: 443, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {b_cert}, privateKey: {b_key}, caCertificates: {ca}}}
  - port: {{number: 443, name: tls-db, protocol: TLS}}
    hosts: [db.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 443, name: https-secret, protocol: HTTPS}}
    hosts: [c.example.com]
    tls: {{mode: SIMPLE, credentialName: c-cert}}
  - port: {{number: 443, name: http-clash, protocol: HTTP}}
    hosts: [d.example.com]
  - port: {{number: 9000, name: tcp, protocol: TCP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/tls]
  http:
  - route: [{{destination: {{host: a.default.svc.cluster.local, port: {{number: 80}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.example.com]
  gateways: [istio-system/tls]
  tls:
  - match: [{{sniHosts: [db.example.com]}}]
    route: [{{destination: {{host: db.default.svc.cluster.local, port: {{number: 5432}}}}}}]
",
        a_cert = p("a.pem"),
        a_key = p("a.key"),
        b_cert = p("b.pem"),
        b_key = p("b.key"),
        ca = p("ca.pem"),
    )
}

#[test]
fn tls_servers_compile_per_server_routes_and_refuse_what_they_cannot_serve() {
    let dir = std::path::Path::new("/etc/gw");
    let m = compile_for(&write_tls_yaml(dir), &ingress());
    let gw = m.gateway.as_deref().unwrap();
    let port = &gw.ports[&443];
    assert_eq!(port.kind, PortKind::Tls);
    assert_eq!(port.servers.len(), 3, "{:?}", gw.errors);

    let a = port.server_for_sni(Some("a.example.com")).unwrap();
    let tls = a.tls.as_ref().unwrap();
    assert_eq!(tls.mode, ServerTlsMode::Simple);
    assert_eq!(tls.server_certificate.as_deref(), Some("/etc/gw/a.pem"));
    assert_eq!(tls.ca_certificates, None);
    assert_eq!(tls.min_version, Some(TlsVersion::V1_3));
    // Each HTTPS server has its own routes, limited to its own hosts.
    let a_routes = gw.routes(a.http_routes.as_deref().unwrap()).unwrap();
    assert_eq!(a_routes.name, "https.443.https-a.tls.istio-system");
    assert!(a_routes.virtual_host("a.example.com").is_some());
    assert!(a_routes.virtual_host("b.example.com").is_none());

    let b = port.server_for_sni(Some("b.example.com")).unwrap();
    let btls = b.tls.as_ref().unwrap();
    assert_eq!(btls.mode, ServerTlsMode::Mutual);
    assert_eq!(btls.ca_certificates.as_deref(), Some("/etc/gw/ca.pem"));

    let db = port.server_for_sni(Some("db.example.com")).unwrap();
    assert!(db.is_passthrough() && db.http_routes.is_none());
    let r = db.tls_route("db.example.com").unwrap();
    assert_eq!(r.virtual_service, "default/db");
    assert_eq!(r.destinations[0].host, "db.default.svc.cluster.local");
    assert_eq!(r.destinations[0].port, Some(5432));

    // Unknown SNI: no server.
    assert!(port.server_for_sni(Some("c.example.com")).is_none());

    let errors: Vec<String> = gw.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("istio-system/tls")
            && errors[0].contains("gw.yaml:")
            && errors[0].contains("spec.servers[3].tls.credentialName")
            && errors[0].contains("serverCertificate, privateKey")
            && errors[0].ends_with("this server is not served"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("spec.servers[4].port.protocol")
            && errors[1].contains("port 443 is already served as Tls"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("spec.servers[5].port.protocol") && errors[2].contains("TCP"),
        "{}",
        errors[2]
    );
    assert!(!gw.ports.contains_key(&9000));
}

#[test]
fn gateway_models_serialize_for_explanations() {
    let m = compile_for(BOOKINFO, &ingress());
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["gateway"]["ports"]["8080"]["kind"], "HTTP");
    let mesh = compile_for(BOOKINFO, &Client::new("default", Labels::new()));
    assert!(serde_json::to_value(&mesh)
        .unwrap()
        .get("gateway")
        .is_none());
}

#[test]
fn a_redirect_rule_stays_a_redirect_on_the_gateway() {
    let yaml = format!(
        "{BOOKINFO}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: moved, namespace: default}}
spec:
  hosts: [old.example.com]
  gateways: [bookinfo-gateway]
  http:
  - redirect: {{authority: new.example.com}}
"
    );
    let m = compile_for(&yaml, &ingress());
    let routes = m.gateway.as_deref().unwrap().routes("http.8080").unwrap();
    let vh = routes.virtual_host("old.example.com").unwrap();
    assert!(matches!(
        vh.routes.routes[0].action,
        Action::Redirect(ref r) if r.authority.as_deref() == Some("new.example.com")
    ));
}
