//! Encoding bookinfo (plus endpoints and an all-features service) and
//! checking the fields istiod and gRPC clients care about.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, UpstreamTlsContext,
};
use mesh_test_support::bookinfo;
use mesh_xds::encode::{encode, EncodeOptions};
use mesh_xds::types::unany;

fn hcm(l: &Listener) -> HttpConnectionManager {
    unany(
        l.api_listener
            .as_ref()
            .unwrap()
            .api_listener
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn bookinfo_listeners_and_routes() {
    let m = bookinfo::productpage();
    let res = encode(&m, &EncodeOptions::default());
    let names: Vec<&str> = res.listeners.iter().map(|l| l.name.as_str()).collect();
    let reviews = "reviews.bookinfo.svc.cluster.local:9080";
    // istiod names the route config after the default cluster.
    let reviews_rds = "outbound|9080||reviews.bookinfo.svc.cluster.local";
    assert!(names.contains(&reviews), "{names:?}");
    let l = res.listeners.iter().find(|l| l.name == reviews).unwrap();
    let h = hcm(l);
    match h.route_specifier.unwrap() {
        RouteSpecifier::Rds(rds) => {
            assert_eq!(rds.route_config_name, reviews_rds);
            assert!(rds.config_source.unwrap().config_source_specifier.is_some());
        }
        other => panic!("{other:?}"),
    }
    let filters: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["envoy.filters.http.router"]);
    // Short names a same-namespace gRPC client may dial name the FQDN routes.
    for alias in [
        "reviews:9080",
        "reviews.bookinfo:9080",
        "reviews.bookinfo.svc:9080",
    ] {
        let l = res.listeners.iter().find(|l| l.name == alias).unwrap();
        let Some(RouteSpecifier::Rds(rds)) = hcm(l).route_specifier else {
            panic!()
        };
        assert_eq!(rds.route_config_name, reviews_rds);
    }

    let rc = res.routes.iter().find(|r| r.name == reviews_rds).unwrap();
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.name, reviews);
    for d in [
        reviews,
        "reviews",
        "reviews:9080",
        "reviews.bookinfo",
        "reviews.bookinfo.svc.cluster.local",
    ] {
        assert!(vh.domains.iter().any(|x| x == d), "{d} in {:?}", vh.domains);
    }
    // jason -> v2 first, then the 90/10 canary with retries and a timeout.
    assert_eq!(vh.routes.len(), 2);
    let jason = &vh.routes[0];
    let hm = &jason.r#match.as_ref().unwrap().headers[0];
    assert_eq!(hm.name, "end-user");
    let Some(Action::Route(ra)) = &jason.action else {
        panic!()
    };
    assert_eq!(
        ra.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080|v2|reviews.bookinfo.svc.cluster.local".into()
        ))
    );
    let Some(Action::Route(ra)) = &vh.routes[1].action else {
        panic!()
    };
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &ra.cluster_specifier else {
        panic!()
    };
    let w: Vec<(String, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        w,
        [
            (
                "outbound|9080|v1|reviews.bookinfo.svc.cluster.local".to_string(),
                90
            ),
            (
                "outbound|9080|v2|reviews.bookinfo.svc.cluster.local".to_string(),
                10
            )
        ]
    );
    #[allow(deprecated)]
    let total = wc.total_weight.unwrap().value;
    assert_eq!(total, 100);
    assert_eq!(ra.timeout.unwrap().seconds, 10);
    assert_eq!(
        ra.max_stream_duration
            .unwrap()
            .max_stream_duration
            .unwrap()
            .seconds,
        10
    );
    let rp = ra.retry_policy.as_ref().unwrap();
    assert_eq!(rp.num_retries.unwrap().value, 3);
    assert_eq!(rp.per_try_timeout.unwrap().seconds, 2);
    assert_eq!(
        rp.retry_on,
        "connect-failure,refused-stream,cancelled,unavailable"
    );
    assert_eq!(
        rp.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
}

#[test]
fn bookinfo_clusters_and_endpoints() {
    let m = bookinfo::productpage();
    let res = encode(&m, &EncodeOptions::default());
    assert!(
        res.clusters.iter().all(|c| c.transport_socket.is_none()),
        "no auto mTLS by default"
    );
    let opts = EncodeOptions {
        auto_mtls: true,
        ..EncodeOptions::default()
    };
    let res = encode(&m, &opts);
    let c = res
        .clusters
        .iter()
        .find(|c| c.name == "outbound|9080||reviews.bookinfo.svc.cluster.local")
        .unwrap();
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 100);
    assert_eq!(c.connect_timeout.unwrap().seconds, 3);
    assert_eq!(c.eds_cluster_config.as_ref().unwrap().service_name, c.name);
    let lbp = &c.load_balancing_policy.as_ref().unwrap().policies[0];
    assert_eq!(
        lbp.typed_extension_config.as_ref().unwrap().name,
        "envoy.load_balancing_policies.wrr_locality"
    );
    // mTLS to in-mesh endpoints with istiod's certificate-provider names.
    let ts = c.transport_socket.as_ref().expect("auto mTLS");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        a,
    )) = &ts.config_type
    else {
        panic!()
    };
    let up: UpstreamTlsContext = unany(a).unwrap();
    let ctx = up.common_tls_context.unwrap();
    #[allow(deprecated)]
    let p = ctx.tls_certificate_certificate_provider_instance.unwrap();
    assert_eq!(
        (p.instance_name.as_str(), p.certificate_name.as_str()),
        ("default", "default")
    );
    // The current fields too: grpc-js-xds reads only these and NACKs a TLS
    // cluster or listener without them.
    let p = ctx.tls_certificate_provider_instance.as_ref().unwrap();
    assert_eq!(
        (p.instance_name.as_str(), p.certificate_name.as_str()),
        ("default", "default")
    );
    let Some(ValidationContextType::CombinedValidationContext(v)) = &ctx.validation_context_type
    else {
        panic!("combined validation context")
    };
    let ca = v
        .default_validation_context
        .as_ref()
        .and_then(|d| d.ca_certificate_provider_instance.as_ref())
        .unwrap();
    assert_eq!(
        (ca.instance_name.as_str(), ca.certificate_name.as_str()),
        ("default", "ROOTCA")
    );

    let e = res
        .endpoints
        .iter()
        .find(|e| e.cluster_name == "outbound|9080|v1|reviews.bookinfo.svc.cluster.local")
        .unwrap();
    let locs: Vec<(String, String, u32)> = e
        .endpoints
        .iter()
        .map(|l| {
            let loc = l.locality.as_ref().unwrap();
            (
                loc.region.clone(),
                loc.zone.clone(),
                l.load_balancing_weight.unwrap().value,
            )
        })
        .collect();
    assert_eq!(
        locs,
        [
            ("us-east".into(), "us-east-1a".into(), 1),
            ("us-west".into(), "us-west-1b".into(), 3)
        ]
    );
}

#[test]
fn faults_hashing_and_ring_hash() {
    let res = bookinfo::bookinfo_resources();
    let m = bookinfo::model_for(&res, "demo", &[("app", "client")]);
    let out = encode(&m, &EncodeOptions::default());
    let name = "echo.demo.svc.cluster.local:7070";
    let l = out.listeners.iter().find(|l| l.name == name).unwrap();
    let filters: Vec<String> = hcm(l).http_filters.iter().map(|f| f.name.clone()).collect();
    assert_eq!(
        filters,
        ["envoy.filters.http.fault", "envoy.filters.http.router"]
    );
    let rc = out
        .routes
        .iter()
        .find(|r| r.name == "outbound|7070||echo.demo.svc.cluster.local")
        .unwrap();
    let r0 = &rc.virtual_hosts[0].routes[0];
    let f: HttpFault = unany(&r0.typed_per_filter_config["envoy.filters.http.fault"]).unwrap();
    assert_eq!(f.delay.unwrap().percentage.unwrap().numerator, 125_000);
    let Some(Action::Route(ra)) = &r0.action else {
        panic!()
    };
    assert_eq!(ra.hash_policy.len(), 1);
    assert_eq!(
        ra.max_stream_duration
            .unwrap()
            .grpc_timeout_header_max
            .unwrap()
            .seconds,
        5
    );
    let c = out
        .clusters
        .iter()
        .find(|c| c.name == "outbound|7070|v1|echo.demo.svc.cluster.local")
        .unwrap();
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
    assert!(c.outlier_detection.is_some());
}

#[test]
fn inbound_listener_with_rbac() {
    let res = bookinfo::bookinfo_resources();
    let client = mesh_core::model::Client::new(
        "bookinfo",
        bookinfo::labels(&[("app", "reviews"), ("version", "v1")]),
    );
    let m = mesh_core::compile::compile(&res, &Default::default(), &client);
    let opts = EncodeOptions {
        inbound_addresses: vec![("0.0.0.0".into(), 9080)],
        ..EncodeOptions::default()
    };
    let out = encode(&m, &opts);
    let l = out
        .listeners
        .iter()
        .find(|l| l.name == "xds.istio.io/grpc/lds/inbound/0.0.0.0:9080")
        .unwrap();
    // STRICT mesh-wide: one chain, client certificates required.
    assert_eq!(l.filter_chains.len(), 1);
    assert!(l.filter_chains[0].transport_socket.is_some());
    let f = &l.filter_chains[0].filters[0];
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
        &f.config_type
    else {
        panic!()
    };
    let h: HttpConnectionManager = unany(a).unwrap();
    let names: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.rbac", "envoy.filters.http.router"]
    );
    let Some(ConfigType::TypedConfig(a)) = &h.http_filters[0].config_type else {
        panic!()
    };
    let rbac: RbacFilter = unany(a).unwrap();
    let rules = rbac.rules.unwrap();
    assert_eq!(rules.policies.len(), 1, "{:?}", rules.policies.keys());
    let Some(RouteSpecifier::RouteConfig(rc)) = &h.route_specifier else {
        panic!()
    };
    assert!(matches!(
        rc.virtual_hosts[0].routes[0].action,
        Some(envoy_types::pb::envoy::config::route::v3::route::Action::NonForwardingAction(_))
    ));
}

#[test]
fn permissive_inbound_and_deny_policy() {
    let deny = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-slow, namespace: demo}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/echo.Echo/Slow"], methods: ["POST"]}}]
    when: [{key: "request.headers[x-env]", values: ["prod"]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec:
  mtls: {mode: PERMISSIVE}
"#;
    let mut res = bookinfo::bookinfo_resources();
    res.extend(bookinfo::load(&[(deny, "deny.yaml")]));
    let client = mesh_core::model::Client::new("demo", bookinfo::labels(&[("app", "echo")]));
    let m = mesh_core::compile::compile(&res, &Default::default(), &client);
    assert!(m.inbound.ports.contains_key(&7070), "{:?}", m.inbound.ports);
    let out = encode(&m, &EncodeOptions::default());
    let l = out
        .listeners
        .iter()
        .find(|l| l.name == "xds.istio.io/grpc/lds/inbound/0.0.0.0:7070")
        .unwrap();
    // PERMISSIVE: one plaintext chain, as istiod sends gRPC servers. A TLS
    // chain beside it made grpcio NACK the listener when its bootstrap had
    // no certificate providers.
    // The chain has no filter_chain_match: grpc-js-xds refuses every
    // connection when a match names no `raw_buffer` transport protocol.
    let chains: Vec<(String, bool, bool)> = l
        .filter_chains
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.filter_chain_match.is_some(),
                c.transport_socket.is_some(),
            )
        })
        .collect();
    assert_eq!(chains, [("inbound-plaintext".to_string(), false, false)]);
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
        &l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let h: HttpConnectionManager = unany(a).unwrap();
    let names: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.rbac.DENY", "envoy.filters.http.router"]
    );
    let Some(ConfigType::TypedConfig(a)) = &h.http_filters[0].config_type else {
        panic!()
    };
    let rbac: RbacFilter = unany(a).unwrap();
    let rules = rbac.rules.unwrap();
    assert_eq!(rules.action, 1, "DENY");
    assert!(rules.policies.contains_key("demo-no-slow-0"));
}

/// grpc-js-xds NACKs a cluster whose typed ring-hash policy leaves the hash
/// function at DEFAULT_HASH ("unexpected hash function"); gRPC only does
/// xxHash, so the encoder names it.
#[test]
fn ring_hash_policy_names_xx_hash() {
    use envoy_types::pb::envoy::extensions::load_balancing_policies::ring_hash::v3::{
        ring_hash::HashFunction, RingHash,
    };
    let res = bookinfo::bookinfo_resources();
    let m = bookinfo::model_for(&res, "demo", &[("app", "client")]);
    let out = encode(&m, &EncodeOptions::default());
    let c = out
        .clusters
        .iter()
        .find(|c| c.name == "outbound|7070|v1|echo.demo.svc.cluster.local")
        .unwrap();
    let policies = &c.load_balancing_policy.as_ref().unwrap().policies;
    let ring = policies
        .iter()
        .filter_map(|p| p.typed_extension_config.as_ref())
        .find(|t| t.name == "envoy.load_balancing_policies.ring_hash")
        .unwrap();
    let rh: RingHash = unany(ring.typed_config.as_ref().unwrap()).unwrap();
    assert_eq!(rh.hash_function, HashFunction::XxHash as i32);
}

/// For proxyless gRPC clients, routes that redirect or answer directly are
/// left out (grpc-js-xds NACKs the whole RouteConfiguration with
/// "unsupported action: redirect"); other clients still get them.
#[test]
fn proxyless_grpc_route_configs_abort_redirects_and_direct_responses() {
    let res = bookinfo::bookinfo_resources();
    let m = bookinfo::model_for(&res, "demo", &[("app", "client")]);
    let actions = |grpc: bool| -> Vec<(String, &'static str)> {
        let out = encode(
            &m,
            &EncodeOptions {
                proxyless_grpc: grpc,
                ..EncodeOptions::default()
            },
        );
        let rc = out
            .routes
            .iter()
            .find(|r| r.name == "outbound|7070||echo.demo.svc.cluster.local")
            .unwrap();
        rc.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| {
                let kind = match &r.action {
                    Some(Action::Route(_)) => "route",
                    Some(Action::Redirect(_)) => "redirect",
                    Some(Action::DirectResponse(_)) => "direct",
                    _ => "other",
                };
                (r.name.clone(), kind)
            })
            .collect()
    };
    let full = actions(false);
    assert!(
        full.contains(&("moved".to_string(), "redirect")),
        "{full:?}"
    );
    assert!(full.contains(&("teapot".to_string(), "direct")), "{full:?}");
    let grpc = actions(true);
    assert!(grpc.iter().all(|(_, k)| *k == "route"), "{grpc:?}");
    assert_eq!(grpc.len(), full.len(), "every route is kept, in order");
    // The two become routes whose every call the fault filter aborts: the
    // teapot's status, UNAVAILABLE for the redirect; not a fall-through.
    let out = encode(
        &m,
        &EncodeOptions {
            proxyless_grpc: true,
            ..EncodeOptions::default()
        },
    );
    let rc = out
        .routes
        .iter()
        .find(|r| r.name == "outbound|7070||echo.demo.svc.cluster.local")
        .unwrap();
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
        fault_abort::ErrorType, HttpFault,
    };
    let abort = |name: &str| {
        let r = rc.virtual_hosts[0]
            .routes
            .iter()
            .find(|r| r.name == name)
            .unwrap();
        let f: HttpFault = unany(&r.typed_per_filter_config["envoy.filters.http.fault"]).unwrap();
        let a = f.abort.unwrap();
        assert_eq!(
            a.percentage.unwrap().numerator,
            1_000_000,
            "{name}: every call"
        );
        a.error_type.unwrap()
    };
    assert!(matches!(abort("teapot"), ErrorType::HttpStatus(418)));
    assert!(matches!(abort("moved"), ErrorType::GrpcStatus(14)));
    let l = out
        .listeners
        .iter()
        .find(|l| l.name == "echo.demo.svc.cluster.local:7070")
        .unwrap();
    assert!(
        hcm(l)
            .http_filters
            .iter()
            .any(|f| f.name == "envoy.filters.http.fault"),
        "the fault filter is there to abort them"
    );
}
