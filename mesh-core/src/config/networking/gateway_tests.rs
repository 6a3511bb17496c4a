use serde_json::json;

use super::*;

fn parse(v: serde_json::Value) -> Gateway {
    match serde_json::from_value(v) {
        Ok(g) => g,
        Err(e) => panic!("does not parse: {e}"),
    }
}

fn errors(g: &Gateway) -> Vec<String> {
    let mut issues = Issues::new();
    g.validate("spec", &mut issues);
    issues.errors().iter().map(ToString::to_string).collect()
}

fn assert_error(g: &Gateway, path: &str, needle: &str) {
    let errs = errors(g);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "expected {path}: ...{needle}... in {errs:#?}"
    );
}

/// A Gateway with the single server `server`.
fn one(server: serde_json::Value) -> Gateway {
    parse(json!({"selector": {"istio": "ingressgateway"}, "servers": [server]}))
}

#[test]
fn istio_docs_example_is_valid() {
    let g = parse(json!({
        "selector": {"app": "my-gateway-controller"},
        "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"},
             "hosts": ["uk.bookinfo.com", "eu.bookinfo.com"],
             "tls": {"httpsRedirect": true}},
            {"port": {"number": 443, "name": "https-443", "protocol": "HTTPS"},
             "hosts": ["uk.bookinfo.com", "eu.bookinfo.com"],
             "tls": {"mode": "SIMPLE", "serverCertificate": "/etc/certs/servercert.pem",
                     "privateKey": "/etc/certs/privatekey.pem"}},
            {"port": {"number": 9443, "name": "https-9443", "protocol": "HTTPS"},
             "hosts": ["bookinfo-namespace/*.bookinfo.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-secret"}},
            {"port": {"number": 9080, "name": "http-wildcard", "protocol": "HTTP"},
             "hosts": ["*"]},
            {"port": {"number": 2379, "name": "mongo", "protocol": "MONGO"},
             "hosts": ["*"]},
            {"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
             "hosts": ["*.local"], "tls": {"mode": "AUTO_PASSTHROUGH"}},
            {"port": {"number": 8443, "name": "mtls", "protocol": "HTTPS"},
             "hosts": ["./api.example.com"], "name": "api",
             "tls": {"mode": "MUTUAL", "credentialNames": ["rsa", "ecdsa"],
                     "minProtocolVersion": "TLSV1_2", "maxProtocolVersion": "TLSV1_3",
                     "cipherSuites": ["ECDHE-ECDSA-AES256-GCM-SHA384"],
                     "subjectAltNames": ["client.example.com"]}}
        ]
    }));
    assert_eq!(errors(&g), Vec::<String>::new());
    assert_eq!(g.servers.len(), 7);
    assert_eq!(g.servers[0].port.as_ref().map(|p| p.number), Some(80));
    let tls = g.servers[6].tls.clone().unwrap_or_default();
    assert_eq!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_2));
    let v = serde_json::to_value(&g).unwrap_or_default();
    assert_eq!(v["servers"][6]["tls"]["maxProtocolVersion"], "TLSV1_3");
    assert!(v["servers"][3].get("tls").is_none());
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(serde_json::from_value::<Gateway>(json!({"server": []})).is_err());
    assert!(serde_json::from_value::<Gateway>(
        json!({"servers": [{"port": {"number": 80, "proto": "HTTP"}}]})
    )
    .is_err());
    assert!(
        serde_json::from_value::<Gateway>(json!({"servers": [{"tls": {"mode": "STRICT"}}]}))
            .is_err()
    );
}

#[test]
fn servers_and_hosts() {
    assert_error(
        &parse(json!({"selector": {"istio": "x"}})),
        "spec.servers",
        "at least one server",
    );
    let g = one(json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"}}));
    assert_error(&g, "spec.servers[0].hosts", "at least one host");
    let g = one(json!({
        "port": {"number": 80, "name": "http", "protocol": "HTTP"},
        "hosts": ["reviews", "bad ns/a.example.com", "*foo.example.com", "10.1.2.3", "./*"]
    }));
    assert_error(&g, "spec.servers[0].hosts[0]", "short host name");
    assert_error(&g, "spec.servers[0].hosts[1]", "invalid namespace");
    assert_error(&g, "spec.servers[0].hosts[2]", "partial wildcard");
    assert_eq!(errors(&g).len(), 3, "{:#?}", errors(&g));
}

#[test]
fn ports() {
    let g = parse(json!({"servers": [
        {"hosts": ["*"]},
        {"port": {"number": 0, "protocol": "SPDY", "targetPort": 8080}, "hosts": ["*"]},
        {"port": {"number": 81, "name": "dup", "protocol": "HTTP"}, "hosts": ["*"]},
        {"port": {"number": 82, "name": "dup", "protocol": "http"}, "hosts": ["*"]}
    ]}));
    assert_error(&g, "spec.servers[0].port", "port is required");
    assert_error(
        &g,
        "spec.servers[1].port.protocol",
        "unsupported protocol \"SPDY\"",
    );
    assert_error(&g, "spec.servers[1].port.number", "out of range");
    assert_error(&g, "spec.servers[1].port.targetPort", "no effect");
    assert_error(&g, "spec.servers[1].port.name", "port name is required");
    assert_error(&g, "spec.servers[3].port.name", "must be unique");
    let g = one(json!({"port": {"number": 80, "name": "http"}, "hosts": ["*"]}));
    assert_error(&g, "spec.servers[0].port.protocol", "protocol is required");
}

#[test]
fn bind() {
    let g = one(json!({
        "port": {"number": 0, "name": "uds", "protocol": "HTTP"},
        "bind": "unix:///var/run/gw.sock", "hosts": ["*"]
    }));
    assert_eq!(errors(&g), Vec::<String>::new());
    let g = one(json!({
        "port": {"number": 80, "name": "uds", "protocol": "HTTP"},
        "bind": "unix://relative", "hosts": ["*"]
    }));
    assert_error(&g, "spec.servers[0].bind", "absolute path");
    assert_error(&g, "spec.servers[0].port.number", "port number 0");
    let g = one(json!({
        "port": {"number": 80, "name": "http", "protocol": "HTTP"},
        "bind": "localhost", "hosts": ["*"]
    }));
    assert_error(&g, "spec.servers[0].bind", "not a valid IP");
}

#[test]
fn tls_required_or_forbidden_by_protocol() {
    let g =
        one(json!({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"]}));
    assert_error(&g, "spec.servers[0].tls", "needs tls settings");
    let g = one(json!({
        "port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"],
        "tls": {"mode": "SIMPLE", "credentialName": "c"}
    }));
    assert_error(
        &g,
        "spec.servers[0].tls",
        "may only carry tls.httpsRedirect",
    );
    let g = one(json!({
        "port": {"number": 5432, "name": "pg", "protocol": "TCP"}, "hosts": ["*"],
        "tls": {"httpsRedirect": true}
    }));
    assert_error(&g, "spec.servers[0].tls", "need an HTTPS or TLS port");
}

#[test]
fn server_tls_rules() {
    let https = |tls: serde_json::Value| {
        one(
            json!({"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                   "hosts": ["*"], "tls": tls}),
        )
    };
    let p = "spec.servers[0].tls";
    let g = https(json!({"mode": "SIMPLE"}));
    assert_error(
        &g,
        &format!("{p}.serverCertificate"),
        "SIMPLE TLS needs a server certificate",
    );
    assert_error(
        &g,
        &format!("{p}.privateKey"),
        "SIMPLE TLS needs a private key",
    );
    let g = https(json!({"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}));
    assert_error(
        &g,
        &format!("{p}.caCertificates"),
        "MUTUAL TLS needs a CA bundle",
    );
    let g = https(json!({"mode": "OPTIONAL_MUTUAL", "caCertificates": "/ca",
                         "tlsCertificates": [{"serverCertificate": "/c"}]}));
    assert_error(
        &g,
        &format!("{p}.tlsCertificates[0].privateKey"),
        "private key",
    );
    let g = https(json!({"mode": "ISTIO_MUTUAL", "credentialName": "c", "privateKey": "/k"}));
    assert_error(&g, &format!("{p}.credentialName"), "ISTIO_MUTUAL");
    assert_error(&g, &format!("{p}.privateKey"), "ISTIO_MUTUAL");
    let g = https(json!({"mode": "SIMPLE", "credentialName": "c",
                         "serverCertificate": "/c", "privateKey": "/k"}));
    assert_error(&g, p, "more than one source");
    let g = https(
        json!({"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k", "caCrl": "/crl"}),
    );
    assert_error(&g, &format!("{p}.caCrl"), "SIMPLE");
    assert!(errors(&https(json!({"mode": "MUTUAL", "credentialName": "c"}))).is_empty());
    assert!(errors(&https(
        json!({"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k",
                                  "caCertificates": "/ca", "caCrl": "/crl"})
    ))
    .is_empty());
    // PASSTHROUGH (the default mode) needs no certificates.
    assert!(errors(&one(
        json!({"port": {"number": 443, "name": "tls", "protocol": "TLS"},
                                "hosts": ["*.example.com"], "tls": {}})
    ))
    .is_empty());
}
