use serde_json::json;

use super::*;

fn parse(v: serde_json::Value) -> DestinationRule {
    match serde_json::from_value(v) {
        Ok(dr) => dr,
        Err(e) => panic!("does not parse: {e}"),
    }
}

fn errors(dr: &DestinationRule) -> Vec<String> {
    let mut issues = Issues::new();
    dr.validate("spec", &mut issues);
    issues.errors().iter().map(ToString::to_string).collect()
}

fn assert_error(dr: &DestinationRule, path: &str, needle: &str) {
    let errs = errors(dr);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "expected {path}: ...{needle}... in {errs:#?}"
    );
}

/// A DestinationRule with only `trafficPolicy` set to `tp`.
fn with_policy(tp: serde_json::Value) -> DestinationRule {
    parse(json!({"host": "reviews.prod.svc.cluster.local", "trafficPolicy": tp}))
}

#[test]
fn istio_docs_circuit_breaker_example() {
    let dr = parse(json!({
        "host": "reviews.prod.svc.cluster.local",
        "trafficPolicy": {
            "loadBalancer": {"simple": "LEAST_REQUEST"},
            "connectionPool": {
                "tcp": {
                    "maxConnections": 100,
                    "connectTimeout": "30ms",
                    "tcpKeepalive": {"time": "7200s", "interval": "75s", "probes": 9},
                    "maxConnectionDuration": "1h",
                    "idleTimeout": "0s"
                },
                "http": {
                    "http1MaxPendingRequests": 64,
                    "http2MaxRequests": 1000,
                    "maxRequestsPerConnection": 10,
                    "maxRetries": 3,
                    "idleTimeout": "90s",
                    "h2UpgradePolicy": "UPGRADE",
                    "maxConcurrentStreams": 100
                }
            },
            "outlierDetection": {
                "consecutive5xxErrors": 7,
                "consecutiveGatewayErrors": 3,
                "splitExternalLocalOriginErrors": true,
                "consecutiveLocalOriginFailures": 2,
                "interval": "5m",
                "baseEjectionTime": "15m",
                "maxEjectionPercent": 50,
                "minHealthPercent": 40
            }
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}
        ],
        "exportTo": ["."]
    }));
    assert_eq!(errors(&dr), Vec::<String>::new());
    let tp = dr.traffic_policy.clone().unwrap_or_default();
    let od = tp.outlier_detection.unwrap_or_default();
    assert_eq!(od.consecutive_5xx_errors, Some(7));
    assert_eq!(od.interval, Some(Duration::from_secs(300)));
    let http = tp.connection_pool.and_then(|c| c.http).unwrap_or_default();
    assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::Upgrade));
    assert_eq!(dr.subsets[1].name, "v2");
}

#[test]
fn every_field_parses_and_round_trips() {
    let v = json!({
        "host": "*.example.com",
        "workloadSelector": {"matchLabels": {"app": "ratings"}},
        "trafficPolicy": {
            "loadBalancer": {
                "consistentHash": {
                    "httpCookie": {"name": "user", "path": "/", "ttl": "0s",
                                   "attributes": [{"name": "SameSite", "value": "Strict"}]},
                    "maglev": {"tableSize": 65537}
                },
                "localityLbSetting": {
                    "enabled": true,
                    "distribute": [{"from": "us-west/zone1/*", "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]
                },
                "warmupDurationSecs": "30s",
                "warmup": {"duration": "90s", "minimumPercent": 10.0, "aggression": 2.0}
            },
            "tls": {
                "mode": "SIMPLE", "caCertificates": "/etc/ca.pem", "subjectAltNames": ["a.example.com"],
                "sni": "a.example.com", "insecureSkipVerify": false, "caCrl": "/etc/crl.pem"
            },
            "portLevelSettings": [{
                "port": {"number": 31443},
                "tls": {"mode": "MUTUAL", "credentialName": "client-credential"}
            }],
            "tunnel": {"protocol": "CONNECT", "targetHost": "proxy.example.com", "targetPort": 3128},
            "retryBudget": {"percent": 25.0, "minRetryConcurrency": 3, "budgetInterval": "10s"}
        },
        "exportTo": ["."]
    });
    let dr = parse(v.clone());
    assert_eq!(errors(&dr), Vec::<String>::new());
    assert_eq!(serde_json::to_value(&dr).ok(), Some(v));
    let lb = dr
        .traffic_policy
        .and_then(|t| t.load_balancer)
        .unwrap_or_default();
    assert_eq!(lb.warmup_duration_secs, Some(Duration::from_secs(30)));
    let ch = lb.consistent_hash.unwrap_or_default();
    assert_eq!(ch.maglev.and_then(|m| m.table_size), Some(65537));
}

#[test]
fn deprecated_fields_parse_without_errors() {
    // The analyzer flags these; validation accepts them as Istio does.
    let dr = with_policy(json!({
        "loadBalancer": {"simple": "LEAST_CONN"},
        "outlierDetection": {"consecutiveErrors": 5, "interval": "10s"}
    }));
    assert_eq!(errors(&dr), Vec::<String>::new());
    let dr = with_policy(json!({
        "loadBalancer": {"consistentHash": {"useSourceIp": true, "minimumRingSize": 1024}},
        "proxyProtocol": {"version": "V2"}
    }));
    assert_eq!(errors(&dr), Vec::<String>::new());
}

#[test]
fn unknown_fields_and_values_are_rejected() {
    for bad in [
        json!({"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_CONNECTIONS"}}}),
        json!({"host": "a", "trafficPolicy": {"outlierDetection": {"consecutive5XXErrors": 1}}}),
        json!({"host": "a", "subsets": [{"name": "v1", "label": {"v": "1"}}]}),
        json!({"host": "a", "trafficPolicy": {"tls": {"mode": "STRICT"}}}),
        json!({"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "10"}}}}),
        json!({"host": "a", "trafficPolicy": {"connectionPool": {"http": {"maxRetries": -1}}}}),
        json!({"host": "a", "extra": true}),
    ] {
        assert!(
            serde_json::from_value::<DestinationRule>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn host_is_required_and_checked() {
    assert_error(&parse(json!({})), "spec.host", "host is required");
    assert_error(
        &parse(json!({"host": "*bad.com"})),
        "spec.host",
        "partial wildcard",
    );
    assert!(errors(&parse(json!({"host": "reviews"}))).is_empty());
    assert!(errors(&parse(json!({"host": "*"}))).is_empty());
}

#[test]
fn subset_rules() {
    let dr = parse(json!({
        "host": "reviews",
        "subsets": [
            {"name": "V1", "labels": {"version": "v1"}},
            {"labels": {"version": "v2"}},
            {"name": "v3", "labels": {"version": "bad value"}},
            {"name": "v3", "trafficPolicy": {}}
        ]
    }));
    assert_error(
        &dr,
        "spec.subsets[0].name",
        "\"V1\" is not a valid DNS-1123 label; use lowercase",
    );
    assert_error(&dr, "spec.subsets[1].name", "subset name is required");
    assert_error(&dr, "spec.subsets[2].labels.version", "label value");
    assert_error(&dr, "spec.subsets[3].name", "duplicate subset name \"v3\"");
    assert_error(
        &dr,
        "spec.subsets[3].trafficPolicy",
        "trafficPolicy is empty",
    );
    assert_eq!(errors(&dr).len(), 5);
}

#[test]
fn traffic_policy_rules() {
    assert_error(&with_policy(json!({})), "spec.trafficPolicy", "is empty");
    let dr = with_policy(json!({
        "tunnel": {"targetHost": "proxy.example.com", "targetPort": 8080},
        "proxyProtocol": {}
    }));
    assert_error(&dr, "spec.trafficPolicy", "tunnel and proxyProtocol");
    let dr = with_policy(json!({
        "tunnel": {"protocol": "GET", "targetHost": "not a host", "targetPort": 0}
    }));
    assert_error(
        &dr,
        "spec.trafficPolicy.tunnel.protocol",
        "\"CONNECT\" or \"POST\"",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.tunnel.targetHost",
        "fully qualified",
    );
    assert_error(&dr, "spec.trafficPolicy.tunnel.targetPort", "out of range");
    assert!(errors(&with_policy(json!({
        "tunnel": {"targetHost": "10.0.0.1", "targetPort": 8080}
    })))
    .is_empty());
    let dr = with_policy(json!({"retryBudget": {"percent": 120.0}}));
    assert_error(
        &dr,
        "spec.trafficPolicy.retryBudget.percent",
        "out of range",
    );
}

#[test]
fn port_level_settings_rules() {
    let dr = with_policy(json!({
        "portLevelSettings": [
            {"loadBalancer": {"simple": "RANDOM"}},
            {"port": {"number": 80}},
            {"port": {"number": 70000}, "outlierDetection": {"interval": "500us"}}
        ]
    }));
    assert_error(
        &dr,
        "spec.trafficPolicy.portLevelSettings[0].port",
        "port is required",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.portLevelSettings[1]",
        "sets nothing",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.portLevelSettings[2].port.number",
        "out of range",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.portLevelSettings[2].outlierDetection.interval",
        "shorter than 1ms",
    );
}

#[test]
fn duration_rules() {
    let dr = with_policy(json!({
        "connectionPool": {
            "tcp": {"connectTimeout": "0s", "maxConnectionDuration": "1.5ms",
                    "idleTimeout": "0s", "tcpKeepalive": {"time": "100us", "interval": "1s"}},
            "http": {"idleTimeout": "0s"}
        },
        "outlierDetection": {"baseEjectionTime": "1500us", "interval": "10s"}
    }));
    assert_error(
        &dr,
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "1ms",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
        "sub-millisecond",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
        "1ms",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.connectionPool.http.idleTimeout",
        "1ms",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        "sub-millisecond",
    );
    // tcp.idleTimeout 0s disables the timeout and is fine; interval 10s is fine.
    assert_eq!(errors(&dr).len(), 5, "{:#?}", errors(&dr));
}

#[test]
fn connection_pool_and_outlier_rules() {
    assert_error(
        &with_policy(json!({"connectionPool": {}})),
        "spec.trafficPolicy.connectionPool",
        "is empty",
    );
    let dr = with_policy(json!({
        "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": true}},
        "outlierDetection": {"consecutiveLocalOriginFailures": 3, "maxEjectionPercent": 101,
                             "minHealthPercent": 200}
    }));
    assert_error(
        &dr,
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "UPGRADE",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors: true",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "0 to 100",
    );
    assert_error(
        &dr,
        "spec.trafficPolicy.outlierDetection.minHealthPercent",
        "0 to 100",
    );
    assert!(errors(&with_policy(json!({
        "outlierDetection": {"maxEjectionPercent": 100, "minHealthPercent": 0}
    })))
    .is_empty());
}

#[test]
fn load_balancer_oneofs() {
    let lb = |v: serde_json::Value| with_policy(json!({"loadBalancer": v}));
    let p = "spec.trafficPolicy.loadBalancer";
    assert_error(
        &lb(json!({"simple": "RANDOM", "consistentHash": {"useSourceIp": true}})),
        p,
        "only one of simple or consistentHash",
    );
    assert_error(
        &lb(json!({"consistentHash": {}})),
        &format!("{p}.consistentHash"),
        "no hash key",
    );
    assert_error(
        &lb(json!({"consistentHash": {"httpHeaderName": "x-user", "useSourceIp": true}})),
        &format!("{p}.consistentHash"),
        "only one hash key",
    );
    assert_error(
        &lb(
            json!({"consistentHash": {"httpCookie": {"ttl": "10s", "attributes": [{"value": "x"}]}}}),
        ),
        &format!("{p}.consistentHash.httpCookie.name"),
        "required",
    );
    assert_error(
        &lb(
            json!({"consistentHash": {"httpCookie": {"name": "c", "attributes": [{"value": "x"}]}}}),
        ),
        &format!("{p}.consistentHash.httpCookie.attributes[0].name"),
        "required",
    );
    assert_error(
        &lb(
            json!({"consistentHash": {"httpQueryParameterName": "u", "ringHash": {}, "maglev": {"tableSize": 65537}}}),
        ),
        &format!("{p}.consistentHash"),
        "ringHash or maglev",
    );
    assert_error(
        &lb(
            json!({"consistentHash": {"httpHeaderName": "x", "minimumRingSize": 10, "ringHash": {"minimumRingSize": 10}}}),
        ),
        &format!("{p}.consistentHash.minimumRingSize"),
        "ringHash.minimumRingSize",
    );
    for (size, needle) in [
        (json!(null), "required"),
        (json!(65536), "not a prime"),
        (json!(5000011), "too large"),
    ] {
        assert_error(
            &lb(json!({"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": size}}})),
            &format!("{p}.consistentHash.maglev.tableSize"),
            needle,
        );
    }
    assert!(errors(&lb(
        json!({"consistentHash": {"httpHeaderName": "x", "ringHash": {"minimumRingSize": 1024}}})
    ))
    .is_empty());
    assert!(errors(&lb(json!({"consistentHash": {"httpQueryParameterName": "user", "maglev": {"tableSize": 131071}}}))).is_empty());
}

#[test]
fn warmup_rules() {
    let dr = with_policy(
        json!({"loadBalancer": {"warmup": {"minimumPercent": 120.0, "aggression": 0.5}}}),
    );
    let p = "spec.trafficPolicy.loadBalancer.warmup";
    assert_error(&dr, &format!("{p}.duration"), "required");
    assert_error(&dr, &format!("{p}.minimumPercent"), "0 to 100");
    assert_error(&dr, &format!("{p}.aggression"), "below 1");
}

#[test]
fn locality_rules() {
    let loc = |v: serde_json::Value| with_policy(json!({"loadBalancer": {"localityLbSetting": v}}));
    let p = "spec.trafficPolicy.loadBalancer.localityLbSetting";
    assert_error(
        &loc(
            json!({"distribute": [{"from": "a/*", "to": {"a/*": 100}}], "failover": [{"from": "a", "to": "b"}]}),
        ),
        p,
        "distribute and failover",
    );
    assert_error(
        &loc(
            json!({"failover": [{"from": "a", "to": "b"}], "failoverPriority": ["topology.kubernetes.io/zone"]}),
        ),
        &format!("{p}.failoverPriority"),
        "failover already orders",
    );
    assert_error(
        &loc(
            json!({"distribute": [{"from": "us-west/*", "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 10}}]}),
        ),
        &format!("{p}.distribute[0].to"),
        "total 90; they must add up to 100",
    );
    assert_error(
        &loc(
            json!({"distribute": [{"from": "us-west/*", "to": {"us-west/zone1/*": 0, "us-west/zone2/*": 100}}]}),
        ),
        &format!("{p}.distribute[0].to.us-west/zone1/*"),
        "1-100",
    );
    assert_error(
        &loc(json!({"distribute": [{"from": "us-*/zone1", "to": {"us-west/*": 100}}]})),
        &format!("{p}.distribute"),
        "one '*' only",
    );
    assert_error(
        &loc(json!({"distribute": [
            {"from": "us-west/*", "to": {"us-west/*": 100}},
            {"from": "us-west/zone1", "to": {"us-west/*": 100}}
        ]})),
        &format!("{p}.distribute"),
        "overlaps",
    );
    assert_error(
        &loc(json!({"distribute": [{"from": "us-west//a", "to": {"us-west/*": 100}}]})),
        &format!("{p}.distribute"),
        "empty region",
    );
    let dr = loc(
        json!({"failover": [{"from": "us-east", "to": "us-east"}, {"from": "us-east/z1", "to": "*"}]}),
    );
    assert_error(&dr, &format!("{p}.failover[0]"), "to itself");
    assert_error(&dr, &format!("{p}.failover[1]"), "regions only");
    assert_error(&dr, &format!("{p}.failover[1]"), "wildcard");
    // Failover without outlier detection is only a warning in Istio (the analyzer reports it).
    assert!(errors(&loc(
        json!({"enabled": true, "failover": [{"from": "us-east", "to": "us-west"}]})
    ))
    .is_empty());
    assert!(errors(&loc(
        json!({"failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/region"]})
    ))
    .is_empty());
}

#[test]
fn client_tls_rules() {
    let tls = |v: serde_json::Value| with_policy(json!({"tls": v}));
    let p = "spec.trafficPolicy.tls";
    let dr = tls(json!({"mode": "MUTUAL"}));
    assert_error(
        &dr,
        &format!("{p}.clientCertificate"),
        "MUTUAL TLS needs a client certificate",
    );
    assert_error(&dr, &format!("{p}.privateKey"), "private key");
    assert!(errors(&tls(json!({"mode": "MUTUAL", "credentialName": "c"}))).is_empty());
    assert!(errors(&tls(json!({"mode": "ISTIO_MUTUAL"}))).is_empty());
    assert_error(
        &tls(json!({"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca.pem"})),
        &format!("{p}.credentialName"),
        "supplies the certificates",
    );
    assert_error(
        &tls(json!({"mode": "SIMPLE", "insecureSkipVerify": true, "subjectAltNames": ["a"]})),
        &format!("{p}.insecureSkipVerify"),
        "would be ignored",
    );
    assert_error(
        &tls(
            json!({"mode": "MUTUAL", "insecureSkipVerify": true, "caCertificates": "/ca.pem",
                    "clientCertificate": "/c.pem", "privateKey": "/k.pem"}),
        ),
        &format!("{p}.insecureSkipVerify"),
        "caCertificates or subjectAltNames",
    );
}

#[test]
fn export_to_and_selector_rules() {
    let dr = parse(json!({
        "host": "example.com",
        "workloadSelector": {"matchLabels": {"app": "a*"}},
        "exportTo": ["*"]
    }));
    assert_error(&dr, "spec.exportTo", "own namespace");
    assert_error(&dr, "spec.workloadSelector.matchLabels.app", "wildcards");
    let dr = parse(json!({"host": "example.com", "exportTo": ["Bad_NS", ".", "."]}));
    assert_error(&dr, "spec.exportTo[0]", "invalid exportTo entry");
    assert_error(&dr, "spec.exportTo[2]", "duplicate");
    let dr = parse(json!({"host": "example.com", "exportTo": ["~"]}));
    assert_error(&dr, "spec.exportTo[0]", "invalid exportTo entry \"~\"");
}
