use serde_json::json;

use super::*;

fn parse(v: serde_json::Value) -> Sidecar {
    match serde_json::from_value(v) {
        Ok(s) => s,
        Err(e) => panic!("does not parse: {e}"),
    }
}

fn errors(s: &Sidecar) -> Vec<String> {
    let mut issues = Issues::new();
    s.validate("spec", &mut issues);
    issues.errors().iter().map(ToString::to_string).collect()
}

fn assert_error(s: &Sidecar, path: &str, needle: &str) {
    let errs = errors(s);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "expected {path}: ...{needle}... in {errs:#?}"
    );
}

#[test]
fn istio_docs_example_is_valid() {
    let s = parse(json!({
        "workloadSelector": {"labels": {"app": "ratings"}},
        "ingress": [{
            "port": {"number": 9080, "protocol": "HTTP", "name": "somename"},
            "defaultEndpoint": "unix:///var/run/someuds.sock",
            "connectionPool": {"http": {"http1MaxPendingRequests": 100}}
        }, {
            "port": {"number": 8443, "protocol": "HTTPS", "name": "https"},
            "defaultEndpoint": "127.0.0.1:8080",
            "captureMode": "IPTABLES",
            "tls": {"mode": "SIMPLE", "privateKey": "/etc/key.pem", "serverCertificate": "/etc/cert.pem"}
        }],
        "egress": [{
            "port": {"number": 9080, "protocol": "HTTP", "name": "egresshttp"},
            "hosts": ["prod-us1/*"]
        }, {
            "port": {"number": 0, "protocol": "HTTP"},
            "bind": "unix:///var/run/someuds.sock",
            "captureMode": "NONE",
            "hosts": ["*/*.example.com"]
        }, {
            "hosts": ["istio-system/*", "./*", "~/*"]
        }],
        "inboundConnectionPool": {"tcp": {"maxConnections": 1000}},
        "outboundTrafficPolicy": {
            "mode": "ALLOW_ANY",
            "egressProxy": {"host": "foo.bar", "subset": "shiny", "port": {"number": 443}}
        }
    }));
    assert_eq!(errors(&s), Vec::<String>::new());
    assert!(s
        .outbound_traffic_policy
        .as_ref()
        .and_then(|o| o.mode)
        .is_some_and(|m| !m.is_registry_only()));
    let labels: Labels = [("app".to_string(), "ratings".to_string())].into();
    assert!(s
        .workload_selector
        .as_ref()
        .is_some_and(|w| w.matches(&labels)));
    assert_eq!(s.egress[1].capture_mode, Some(CaptureMode::None));
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(serde_json::from_value::<Sidecar>(
        json!({"workloadSelector": {"matchLabels": {"app": "a"}}})
    )
    .is_err());
    assert!(serde_json::from_value::<Sidecar>(json!({"egress": [{"host": ["./*"]}]})).is_err());
    assert!(
        serde_json::from_value::<Sidecar>(json!({"outboundTrafficPolicy": {"mode": "DENY"}}))
            .is_err()
    );
}

#[test]
fn empty_and_selector() {
    assert_error(&parse(json!({})), "spec", "configures nothing");
    let s = parse(
        json!({"workloadSelector": {"labels": {"app": "*"}}, "egress": [{"hosts": ["./*"]}]}),
    );
    assert_error(&s, "spec.workloadSelector.labels.app", "wildcards");
    let s = parse(json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}));
    assert_eq!(errors(&s), Vec::<String>::new());
    assert_eq!(
        OutboundTrafficPolicyMode::default(),
        OutboundTrafficPolicyMode::RegistryOnly
    );
}

#[test]
fn egress_rules() {
    let s = parse(json!({"egress": [
        {"hosts": ["./*"]},
        {"port": {"number": 80, "protocol": "HTTP", "name": "Web", "targetPort": 8080}, "hosts": []},
        {"port": {"number": 80, "protocol": "FOO"}, "bind": "not-ip", "hosts": ["reviews.default.svc.cluster.local", "./reviews", "*/*foo.com"]},
        {"port": {"number": 0}, "captureMode": "IPTABLES", "hosts": ["./*"]},
        {"hosts": ["./*"]},
        {"hosts": ["*/*"]}
    ]}));
    assert_error(&s, "spec.egress[0]", "must be the last one");
    assert_error(&s, "spec.egress[1].port.name", "DNS-1123");
    assert_error(&s, "spec.egress[1].port.targetPort", "no effect");
    assert_error(&s, "spec.egress[1].hosts", "at least one host");
    assert_error(
        &s,
        "spec.egress[2].port.number",
        "used by another egress listener",
    );
    assert_error(&s, "spec.egress[2].port.protocol", "unsupported protocol");
    assert_error(&s, "spec.egress[2].bind", "not a valid IP");
    assert_error(&s, "spec.egress[2].hosts[0]", "namespace/dnsName");
    assert_error(&s, "spec.egress[2].hosts[1]", "short host name");
    assert_error(&s, "spec.egress[2].hosts[2]", "partial wildcard");
    assert_error(&s, "spec.egress[3].port.number", "Unix socket bind");
    assert_error(&s, "spec.egress[3].captureMode", "IPTABLES");
    assert_error(
        &s,
        "spec.egress[4]",
        "only one egress listener may omit the port",
    );
    assert_error(
        &s,
        "spec.egress[5]",
        "only one egress listener may omit the port",
    );
}

#[test]
fn ingress_rules() {
    let s = parse(json!({"ingress": [
        {"defaultEndpoint": "127.0.0.1:80"},
        {"port": {"number": 70000, "protocol": "HTTP"}, "bind": "::1"},
        {"port": {"number": 8080, "protocol": "HTTP"}, "defaultEndpoint": "10.0.0.1:8080",
         "tls": {"mode": "ISTIO_MUTUAL", "credentialName": "c", "httpsRedirect": true}},
        {"port": {"number": 8080, "protocol": "TCP"}, "defaultEndpoint": "127.0.0.1:http",
         "connectionPool": {}}
    ]}));
    assert_error(&s, "spec.ingress[0].port", "port is required");
    assert_error(&s, "spec.ingress[1].port.number", "out of range");
    assert_error(&s, "spec.ingress[2].defaultEndpoint", "not allowed");
    assert_error(&s, "spec.ingress[2].tls.credentialName", "not supported");
    assert_error(&s, "spec.ingress[2].tls.httpsRedirect", "not supported");
    assert_error(
        &s,
        "spec.ingress[2].tls.mode",
        "cannot be used in sidecar ingress",
    );
    assert_error(&s, "spec.ingress[2].tls", "HTTPS or TLS port");
    assert_error(
        &s,
        "spec.ingress[3].port.number",
        "used by another ingress listener",
    );
    assert_error(&s, "spec.ingress[3].defaultEndpoint", "not a number");
    assert_error(&s, "spec.ingress[3].connectionPool", "is empty");
    let s = parse(
        json!({"ingress": [{"port": {"number": 8443, "protocol": "HTTPS"}, "tls": {"mode": "SIMPLE"}}]}),
    );
    assert_error(
        &s,
        "spec.ingress[0].tls.serverCertificate",
        "server certificate",
    );
    let s =
        parse(json!({"ingress": [{"port": {"number": 8080}, "defaultEndpoint": "[::1]:8080"}]}));
    assert_eq!(errors(&s), Vec::<String>::new());
}

#[test]
fn outbound_policy_rules() {
    let s = parse(
        json!({"outboundTrafficPolicy": {"egressProxy": {"host": "proxy.example.com", "port": {"number": 3128}}}}),
    );
    assert_error(
        &s,
        "spec.outboundTrafficPolicy.egressProxy",
        "mode: ALLOW_ANY",
    );
    let s = parse(
        json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "*.example.com", "subset": "V1"}}}),
    );
    assert_error(
        &s,
        "spec.outboundTrafficPolicy.egressProxy.host",
        "fully qualified",
    );
    assert_error(
        &s,
        "spec.outboundTrafficPolicy.egressProxy.subset",
        "DNS-1123",
    );
    assert_error(
        &s,
        "spec.outboundTrafficPolicy.egressProxy.port",
        "required",
    );
    assert_error(
        &parse(json!({"inboundConnectionPool": {"tcp": {"connectTimeout": "0s"}}})),
        "spec.inboundConnectionPool.tcp.connectTimeout",
        "1ms",
    );
}
