//! Compiles the Gateways that select a gateway workload into its
//! [`GatewayModel`]: servers grouped by port, the HTTP route configurations
//! they serve and the SNI routes of PASSTHROUGH servers.
//!
//! As istiod by default, a Gateway in any namespace selects the workload
//! when its `selector` labels are all carried by it (an empty selector
//! selects every gateway workload). A VirtualService reaches a server when
//! it is bound to that server's Gateway (`gateways`, short names in the
//! VirtualService's namespace), one of its hosts intersects a server host
//! whose `namespace/` rule admits the VirtualService's namespace; the
//! intersection (the more specific of the two) is the virtual host's
//! domain. Plain HTTP servers of one port share one route configuration
//! (`http.<port>`, Istio's); each terminating HTTPS server has its own
//! (`https.<port>.<port name>.<gateway>.<namespace>`), so the SNI that
//! chose the server also bounds the hosts a request may ask for.
//!
//! Approximations, on purpose:
//! - VirtualServices for one domain are merged in `namespace/name` order
//!   (istiod orders by creation time, which files do not have).
//! - A destination without a port takes the service's only port; with
//!   several ports it has none and the request fails (istiod rejects it).
//! - The servers' `bind` addresses are not served: the caller decides
//!   where each port listens.
//!
//! What a server asks for that cannot be served faithfully (a Kubernetes
//! secret as `credentialName`, CRLs, client-certificate pinning, cipher
//! lists, TCP ports, TLS termination before TCP routing) is refused:
//! the server is left out and a [`GatewayServerError`] names the file,
//! line, field and fix. Security fails closed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::common::{selector_matches, Labels};
use crate::config::kube::Protocol;
use crate::config::networking::gateway::{
    Server, ServerTlsMode as ConfigMode, ServerTlsSettings, TlsProtocol,
};
use crate::config::{Kind, Resource};
use crate::host::{fqdn, host_matches};
use crate::model::gateway::{
    GatewayModel, GatewayPort, GatewayRoutes, GatewayServer, GatewayServerError, PortKind,
    ServerHost, ServerTls, ServerTlsMode, TlsRoute, TlsVersion, VirtualHost,
};
use crate::model::Client;
use crate::registry::Registry;
use crate::route::compile::gateways_apply;
use crate::route::tls::{compile_tls_routes, hosts_overlap};
use crate::route::{compile_gateway_http_routes, Action, Route, RouteTable, VsRef};

use super::Compiler;

/// The Gateways whose selector selects a workload with `labels`, in
/// `namespace/name` order, from every namespace.
pub fn selected<'a>(compiler: &'a Compiler, labels: &Labels) -> Vec<&'a Resource> {
    let mut out: Vec<&Resource> = compiler
        .of_kind(Kind::Gateway)
        .filter(|r| {
            r.gateway()
                .is_some_and(|g| selector_matches(&g.selector, labels))
        })
        .collect();
    out.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    out
}

/// Builds the gateway model of `client` (whose `gateways` are already the
/// names of `gateways`) from the VirtualServices it may see.
pub fn build(
    gateways: &[&Resource],
    vss: &[VsRef<'_>],
    client: &Client,
    registry: &Registry,
    domain_suffix: &str,
) -> GatewayModel {
    let mut model = GatewayModel {
        gateways: gateways.iter().map(|r| r.ns_name()).collect(),
        ..GatewayModel::default()
    };
    for r in gateways {
        let Some(gw) = r.gateway() else { continue };
        for (i, s) in gw.servers.iter().enumerate() {
            match server(r, i, s) {
                Ok(srv) => add_server(&mut model, r, srv),
                Err(e) => model.errors.push(e),
            }
        }
    }
    let ctx = Ctx {
        vss,
        client,
        registry,
        suffix: domain_suffix,
    };
    let mut routes = BTreeMap::new();
    for port in model.ports.values_mut() {
        match port.kind {
            PortKind::Http => {
                let name = format!("http.{}", port.number);
                let servers: Vec<&GatewayServer> = port.servers.iter().collect();
                let table = ctx.http_routes(&name, port.number, &servers);
                routes.insert(name.clone(), Arc::new(table));
                port.http_routes = Some(name);
            }
            PortKind::Tls => {
                for s in &mut port.servers {
                    if s.is_passthrough() {
                        s.tls_routes = ctx.tls_routes(port.number, s);
                        continue;
                    }
                    let (ns, name) = s.gateway.split_once('/').unwrap_or(("", &s.gateway));
                    let rname = format!("https.{}.{}.{name}.{ns}", port.number, s.port_name);
                    let table = ctx.http_routes(&rname, port.number, &[&*s]);
                    routes.insert(rname.clone(), Arc::new(table));
                    s.http_routes = Some(rname);
                }
            }
        }
    }
    model.routes = routes;
    model
}

/// Adds a served server to its port, unless the port already speaks
/// another protocol.
fn add_server(model: &mut GatewayModel, r: &Resource, srv: Compiled) {
    let kind = if srv.protocol.is_http() {
        PortKind::Http
    } else {
        PortKind::Tls
    };
    let number = srv.port_number;
    let port = model.ports.entry(number).or_insert_with(|| GatewayPort {
        number,
        kind,
        servers: Vec::new(),
        http_routes: None,
    });
    if port.kind != kind {
        let first = port.servers.first().map_or_else(String::new, |s| s.label());
        model.errors.push(error(
            r,
            srv.index,
            "port.protocol",
            format!(
                "port {number} is already served as {:?} by {first}, and one port serves one protocol family (plaintext HTTP or TLS); move this server to another port",
                port.kind
            ),
        ));
        return;
    }
    port.servers.push(srv.server);
}

/// A compiled server with its port number (kept apart: the port holds it).
struct Compiled {
    port_number: u16,
    index: usize,
    protocol: Protocol,
    server: GatewayServer,
}

impl std::ops::Deref for Compiled {
    type Target = GatewayServer;
    fn deref(&self) -> &GatewayServer {
        &self.server
    }
}

fn error(r: &Resource, index: usize, field: &str, reason: impl Into<String>) -> GatewayServerError {
    let path = format!("spec.servers[{index}].{field}");
    GatewayServerError {
        gateway: r.ns_name(),
        origin: format!("{}:{}", r.origin.file, r.origin.line_of(&path)),
        field: path,
        reason: reason.into(),
    }
}

/// Compiles one server, or says why it cannot be served.
fn server(r: &Resource, index: usize, s: &Server) -> Result<Compiled, GatewayServerError> {
    let err = |field: &str, why: &str| error(r, index, field, why);
    let Some(port) = &s.port else {
        return Err(err("port", "the server has no port"));
    };
    let number = u16::try_from(port.number)
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| err("port.number", "a gateway port must be 1 to 65535"))?;
    if s.bind.as_deref().is_some_and(|b| !b.is_empty()) {
        return Err(err(
            "bind",
            "bind is not supported: the gateway listens where its caller maps the port; remove bind",
        ));
    }
    if s.default_endpoint.is_some() {
        return Err(err(
            "defaultEndpoint",
            "defaultEndpoint applies to Sidecar ingress listeners, not gateways; remove it",
        ));
    }
    let protocol = Protocol::from_istio(&port.protocol);
    let tls_family = protocol.is_tls();
    if !protocol.is_http() && !tls_family {
        return Err(err(
            "port.protocol",
            &format!(
                "protocol {} is not served by this gateway (HTTP, HTTP2, GRPC, HTTPS and TLS are); use one of those",
                port.protocol
            ),
        ));
    }
    let gateway_ns = r.meta.namespace.as_str();
    let hosts = s
        .hosts
        .iter()
        .map(|h| ServerHost::parse(h, gateway_ns))
        .collect();
    let (tls, https_redirect) = match (&s.tls, tls_family) {
        (Some(t), false) => (None, t.https_redirect == Some(true)),
        (None, false) => (None, false),
        (None, true) => {
            return Err(err(
                "tls",
                "an HTTPS or TLS server needs tls settings; add tls: {mode: SIMPLE, serverCertificate: ..., privateKey: ...}",
            ))
        }
        (Some(t), true) => (Some(server_tls(t, protocol, &err)?), false),
    };
    Ok(Compiled {
        port_number: number,
        index,
        protocol,
        server: GatewayServer {
            gateway: r.ns_name(),
            index,
            port_name: port.name.clone(),
            protocol,
            hosts,
            tls,
            https_redirect,
            http_routes: None,
            tls_routes: Vec::new(),
        },
    })
}

/// The TLS of an HTTPS/TLS server, refusing what would not be enforced.
fn server_tls(
    t: &ServerTlsSettings,
    protocol: Protocol,
    err: &dyn Fn(&str, &str) -> GatewayServerError,
) -> Result<ServerTls, GatewayServerError> {
    let mode = match t.mode.unwrap_or_default() {
        ConfigMode::Passthrough => ServerTlsMode::Passthrough,
        ConfigMode::Simple => ServerTlsMode::Simple,
        ConfigMode::Mutual => ServerTlsMode::Mutual,
        ConfigMode::OptionalMutual => ServerTlsMode::OptionalMutual,
        ConfigMode::IstioMutual => ServerTlsMode::IstioMutual,
        ConfigMode::AutoPassthrough => {
            return Err(err(
                "tls.mode",
                "AUTO_PASSTHROUGH (east-west gateways routing on Istio's SNI encoding) is not supported; use PASSTHROUGH with VirtualService tls routes",
            ))
        }
    };
    let passthrough = mode == ServerTlsMode::Passthrough;
    if !passthrough && protocol == Protocol::Tls {
        return Err(err(
            "port.protocol",
            "terminating TLS and then routing TCP is not supported; use protocol HTTPS to route the decrypted HTTP, or tls.mode PASSTHROUGH",
        ));
    }
    if t.credential_name.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(err(
            "tls.credentialName",
            "credentialName names a Kubernetes secret, which this gateway cannot read; mount the secret and set serverCertificate, privateKey (and caCertificates for MUTUAL) to its files",
        ));
    }
    if !t.credential_names.is_empty() {
        return Err(err(
            "tls.credentialNames",
            "credentialNames name Kubernetes secrets, which this gateway cannot read; set serverCertificate and privateKey to files instead",
        ));
    }
    for (set, field, why) in [
        (
            t.ca_crl.is_some(),
            "tls.caCrl",
            "certificate revocation lists are not checked; remove caCrl (connections are refused rather than accepted without the check)",
        ),
        (
            !t.subject_alt_names.is_empty(),
            "tls.subjectAltNames",
            "client certificate SAN checks are not supported; remove subjectAltNames or restrict clients with an AuthorizationPolicy",
        ),
        (
            !t.verify_certificate_spki.is_empty(),
            "tls.verifyCertificateSpki",
            "client certificate pinning is not supported; remove verifyCertificateSpki",
        ),
        (
            !t.verify_certificate_hash.is_empty(),
            "tls.verifyCertificateHash",
            "client certificate pinning is not supported; remove verifyCertificateHash",
        ),
        (
            !t.cipher_suites.is_empty(),
            "tls.cipherSuites",
            "cipher suite lists are not supported (rustls offers only modern AEAD suites); remove cipherSuites",
        ),
    ] {
        if set {
            return Err(err(field, why));
        }
    }
    let (mut cert, mut key, mut ca) = (
        t.server_certificate.clone(),
        t.private_key.clone(),
        t.ca_certificates.clone(),
    );
    match t.tls_certificates.as_slice() {
        [] => {}
        [one] => {
            cert = one.server_certificate.clone();
            key = one.private_key.clone();
            ca = ca.or_else(|| one.ca_certificates.clone());
        }
        _ => {
            return Err(err(
                "tls.tlsCertificates",
                "several certificates per server are not supported; keep one, or use serverCertificate and privateKey",
            ))
        }
    }
    let needs_files = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if needs_files && (cert.is_none() || key.is_none()) {
        return Err(err(
            "tls.serverCertificate",
            "a terminating server needs serverCertificate and privateKey files",
        ));
    }
    if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) && ca.is_none() {
        return Err(err(
            "tls.caCertificates",
            "MUTUAL needs caCertificates, the CA bundle file that verifies client certificates",
        ));
    }
    let min_version = match t.min_protocol_version {
        // TLS 1.0 and 1.1 are not offered at all: accepting only 1.2 and
        // up is stricter than asked, never weaker.
        None | Some(TlsProtocol::TlsAuto | TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1) => None,
        Some(TlsProtocol::TlsV1_2) => Some(TlsVersion::V1_2),
        Some(TlsProtocol::TlsV1_3) => Some(TlsVersion::V1_3),
    };
    let max_version = match t.max_protocol_version {
        None | Some(TlsProtocol::TlsAuto) => None,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1) => {
            return Err(err(
                "tls.maxProtocolVersion",
                "TLS 1.0 and 1.1 are not served; set maxProtocolVersion to TLSV1_2 or TLSV1_3",
            ))
        }
        Some(TlsProtocol::TlsV1_2) => Some(TlsVersion::V1_2),
        Some(TlsProtocol::TlsV1_3) => Some(TlsVersion::V1_3),
    };
    if let (Some(min), Some(max)) = (min_version, max_version) {
        if min > max {
            return Err(err(
                "tls.minProtocolVersion",
                "minProtocolVersion is above maxProtocolVersion",
            ));
        }
    }
    let (cert, key, ca) = if passthrough || mode == ServerTlsMode::IstioMutual {
        (None, None, None)
    } else {
        (cert, key, ca)
    };
    Ok(ServerTls {
        mode,
        server_certificate: cert,
        private_key: key,
        ca_certificates: if mode == ServerTlsMode::Simple {
            None
        } else {
            ca
        },
        min_version,
        max_version,
    })
}

/// What route compilation reads.
struct Ctx<'a, 'v> {
    vss: &'a [VsRef<'v>],
    client: &'a Client,
    registry: &'a Registry,
    suffix: &'a str,
}

impl Ctx<'_, '_> {
    /// `client` as it is seen by one of its Gateways: a VirtualService
    /// bound to another of them does not reach this Gateway's servers.
    fn as_gateway(&self, gateway: &str) -> Client {
        Client {
            gateways: vec![gateway.to_string()],
            ..self.client.clone()
        }
    }

    /// The virtual hosts `servers` (on `port`) serve, merged by domain.
    fn http_routes(&self, name: &str, port: u16, servers: &[&GatewayServer]) -> GatewayRoutes {
        let mut hosts: Vec<(VirtualHost, Vec<String>)> = Vec::new();
        for s in servers {
            let client = self.as_gateway(&s.gateway);
            for v in self.vss {
                if v.spec.is_delegate()
                    || v.spec.http.is_empty()
                    || !gateways_apply(&v.spec.gateways, v.namespace, &client)
                {
                    continue;
                }
                for domain in domains(v, s, self.suffix) {
                    let at = match hosts.iter().position(|(h, _)| h.domain == domain) {
                        Some(i) => i,
                        None => {
                            hosts.push((
                                VirtualHost {
                                    domain: domain.clone(),
                                    https_redirect: s.https_redirect,
                                    routes: Arc::new(RouteTable {
                                        host: domain.clone(),
                                        port: Some(port),
                                        ..RouteTable::default()
                                    }),
                                },
                                Vec::new(),
                            ));
                            hosts.len() - 1
                        }
                    };
                    let Some((vh, merged)) = hosts.get_mut(at) else {
                        continue;
                    };
                    vh.https_redirect |= s.https_redirect;
                    let key = v.key();
                    if merged.contains(&key) {
                        continue;
                    }
                    let table = Arc::make_mut(&mut vh.routes);
                    let mut routes = compile_gateway_http_routes(
                        *v,
                        self.vss,
                        &client,
                        port,
                        self.suffix,
                        &mut table.warnings,
                    );
                    for r in &mut routes {
                        self.fill_ports(r);
                    }
                    table.routes.extend(routes);
                    table.virtual_service.get_or_insert_with(|| key.clone());
                    merged.push(key);
                }
            }
        }
        GatewayRoutes {
            name: name.to_string(),
            virtual_hosts: hosts.into_iter().map(|(h, _)| h).collect(),
        }
    }

    /// The SNI routes of a PASSTHROUGH server on `port`.
    fn tls_routes(&self, port: u16, s: &GatewayServer) -> Vec<TlsRoute> {
        let client = self.as_gateway(&s.gateway);
        let mut out = Vec::new();
        for v in self.vss {
            if v.spec.tls.is_empty() {
                continue;
            }
            let mut routes = compile_tls_routes(*v, &client, port, self.suffix, |sni| {
                s.hosts
                    .iter()
                    .any(|h| h.admits_namespace(v.namespace) && hosts_overlap(&h.host, sni))
            });
            for r in &mut routes {
                for d in &mut r.destinations {
                    if d.port.is_none() {
                        d.port = self.only_port(&d.host);
                    }
                }
            }
            out.extend(routes);
        }
        out
    }

    /// Gives destinations and mirrors without a port the service's only
    /// port.
    fn fill_ports(&self, r: &mut Route) {
        if let Action::Forward(w) = &mut r.action {
            for d in &mut w.destinations {
                if d.port.is_none() {
                    d.port = self.only_port(&d.host);
                }
            }
        }
        for m in &mut r.mirrors {
            if m.port.is_none() {
                m.port = self.only_port(&m.host);
            }
        }
    }

    /// The port of a service with exactly one.
    fn only_port(&self, host: &str) -> Option<u16> {
        let mut ports = self
            .registry
            .services_named(host)
            .flat_map(|s| s.ports.iter().map(|p| p.number));
        let first = ports.next()?;
        ports.all(|p| p == first).then_some(first)
    }
}

/// The domains `v` serves on server `s`: each intersection of one of its
/// hosts with a server host admitting its namespace, the more specific
/// of the two.
fn domains(v: &VsRef<'_>, s: &GatewayServer, suffix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for h in &v.spec.hosts {
        let h = fqdn(h, v.namespace, suffix);
        for sh in s.hosts.iter().filter(|sh| sh.admits_namespace(v.namespace)) {
            let domain = if host_matches(&sh.host, &h) {
                h.clone()
            } else if host_matches(&h, &sh.host) {
                sh.host.clone()
            } else {
                continue;
            };
            if !out.contains(&domain) {
                out.push(domain);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
