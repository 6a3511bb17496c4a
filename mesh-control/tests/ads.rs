//! meshd end to end on loopback: real Istio YAML in a temp directory, real
//! ADS clients with Istio node metadata, edits on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mesh_xds::types;

#[tokio::test]
async fn serves_each_node_and_pushes_only_to_nodes_whose_config_changed() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    assert_eq!(meshd.generation(), Some(1));

    // A client in demo sees the demo-only VirtualService; one in team-b does not.
    let mut a = Ads::connect(
        meshd.xds_addr(),
        node("client-a", "demo", &[("app", "client")], &[]),
    )
    .await;
    let mut b = Ads::connect(
        meshd.xds_addr(),
        node("client-b", "team-b", &[("app", "other")], &[]),
    )
    .await;
    a.sync_all().await;
    b.sync_all().await;

    let cds = &a.last[types::CLUSTER];
    let names: Vec<String> = clusters(cds).into_iter().map(|c| c.name).collect();
    assert!(names.contains(&ECHO_EDS.to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.contains("api.example.com")),
        "{names:?}"
    );
    let eds = endpoints(&a.last[types::ENDPOINT]);
    assert_eq!(eds[ECHO_EDS], ["10.0.0.1:7070"]);
    let rds = routes(&a.last[types::ROUTE]);
    let web = rds
        .iter()
        .find(|r| r.name == WEB_RDS)
        .expect("web route config");
    let route_json = format!("{web:?}");
    assert!(route_json.contains("seconds: 5"), "{route_json}");

    let a_versions: Vec<String> = [types::CLUSTER, types::ENDPOINT, types::LISTENER]
        .iter()
        .map(|t| a.version(t))
        .collect();

    // Change the timeout: only demo's route config changes.
    std::fs::write(dir.path().join("web-vs.yaml"), web_vs("7s")).unwrap();
    let r = a.recv_ack(&rds_names(&a.last[types::LISTENER])).await;
    assert_eq!(r.type_url, types::ROUTE);
    let web = routes(&r).into_iter().find(|r| r.name == WEB_RDS).unwrap();
    assert!(format!("{web:?}").contains("seconds: 7"));
    a.silent(300).await;
    b.silent(300).await;
    assert_eq!(meshd.generation(), Some(2));
    // The other types kept their versions.
    let after: Vec<String> = [types::CLUSTER, types::ENDPOINT, types::LISTENER]
        .iter()
        .map(|t| a.version(t))
        .collect();
    assert_eq!(a_versions, after);

    // Every affected client ACKed: convergence recorded.
    let ctl = meshd.controller().clone();
    eventually("convergence", || {
        let ctl = ctl.clone();
        async move { ctl.convergence().completed() >= 1 && ctl.convergence().waiting() == 0 }
    })
    .await;

    // An edit that changes nothing for anyone (a comment) is a new
    // generation but no push.
    std::fs::write(
        dir.path().join("web-vs.yaml"),
        format!("# tuned\n{}", web_vs("7s")),
    )
    .unwrap();
    let ctl = meshd.controller().clone();
    eventually("generation 3", || {
        let ctl = ctl.clone();
        async move { ctl.generation().map(|g| g.number) == Some(3) }
    })
    .await;
    a.silent(300).await;
    b.silent(100).await;
    meshd.shutdown().await;
}

#[tokio::test]
async fn invalid_edit_is_rejected_and_last_good_config_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    let mut a = Ads::connect(
        meshd.xds_addr(),
        node("client-a", "demo", &[("app", "client")], &[]),
    )
    .await;
    a.sync_all().await;
    let before = a.version(types::ROUTE);

    // A typo in a field name, and a timeout change in the same file.
    std::fs::write(
        dir.path().join("web-vs.yaml"),
        web_vs("9s").replace("  - timeout: 9s", "  - timout: 9s"),
    )
    .unwrap();
    let http = meshd.http_addr();
    eventually("the rejection in /debug/configz", || async move {
        json(http, "/debug/configz").await["lastRejection"].is_object()
    })
    .await;
    let configz = json(http, "/debug/configz").await;
    let errors = configz["lastRejection"]["errors"].to_string();
    assert!(errors.contains("web-vs.yaml:8"), "{errors}");
    assert!(errors.contains("timout"), "{errors}");
    assert_eq!(configz["generation"], 1);
    assert_eq!(configz["rejections"], 1);
    let (_, metrics) = http_get(http, "/metrics").await;
    let m = parse_metrics(&metrics);
    assert_eq!(m["meshd_config_rejections_total"], 1.0, "{metrics}");
    assert_eq!(m["meshd_config_generation"], 1.0);
    // No push; the client keeps the old version.
    a.silent(400).await;
    assert_eq!(a.version(types::ROUTE), before);

    // Fixing it applies and clears the rejection.
    std::fs::write(dir.path().join("web-vs.yaml"), web_vs("9s")).unwrap();
    let r = a.recv_ack(&rds_names(&a.last[types::LISTENER])).await;
    assert_eq!(r.type_url, types::ROUTE);
    assert_ne!(r.version_info, before);
    let configz = json(http, "/debug/configz").await;
    assert!(configz["lastRejection"].is_null(), "{configz}");
    assert_eq!(configz["generation"], 2);
    meshd.shutdown().await;
}

/// A response's type, version and resources, for assertion messages.
fn describe(r: &mesh_xds::pb::envoy::service::discovery::v3::DiscoveryResponse) -> String {
    let names: Vec<String> = r
        .resources
        .iter()
        .map(|a| format!("{} ({} bytes)", a.type_url, a.value.len()))
        .collect();
    format!("{} version {}: {names:?}", r.type_url, r.version_info)
}

#[tokio::test]
async fn auto_registered_workload_is_an_endpoint_while_connected() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    let mut a = Ads::connect(
        meshd.xds_addr(),
        node("client-a", "demo", &[("app", "client")], &[]),
    )
    .await;
    a.sync_all().await;
    let eds_subs = eds_names(&a.last[types::CLUSTER]);
    assert_eq!(
        endpoints(&a.last[types::ENDPOINT])[ECHO_EDS],
        ["10.0.0.1:7070"]
    );

    // A VM-style echo replica connects with WorkloadGroup metadata.
    let vm = node(
        "echo-vm-1",
        "demo",
        &[("app", "echo"), ("version", "v2")],
        &[
            ("AUTO_REGISTER_GROUP", "echo"),
            ("INSTANCE_IPS", "10.9.8.7"),
            (
                "POD_PORTS",
                r#"[{"name":"grpc","containerPort":17070,"protocol":"TCP"}]"#,
            ),
        ],
    );
    let mut w = Ads::connect(meshd.xds_addr(), vm).await;
    w.send(types::CLUSTER, &[], "", "").await;
    w.recv_ack(&[]).await;
    let r = a.recv_ack(&eds_subs).await;
    assert_eq!(r.type_url, types::ENDPOINT, "{}", describe(&r));
    let mut eps = endpoints(&r)[ECHO_EDS].clone();
    eps.sort();
    assert_eq!(eps, ["10.0.0.1:7070", "10.9.8.7:17070"]);
    let configz = json(meshd.http_addr(), "/debug/configz").await;
    assert_eq!(
        configz["autoRegistered"][0]["workloadEntry"],
        "WorkloadEntry/demo/echo-10-9-8-7"
    );

    // It disconnects: the endpoint goes away.
    drop(w);
    let r = a.recv_ack(&eds_subs).await;
    assert_eq!(r.type_url, types::ENDPOINT, "{}", describe(&r));
    assert_eq!(endpoints(&r)[ECHO_EDS], ["10.0.0.1:7070"]);
    let configz = json(meshd.http_addr(), "/debug/configz").await;
    assert_eq!(configz["autoRegistered"], serde_json::json!([]));
    meshd.shutdown().await;
}

#[tokio::test]
async fn grpc_server_gets_its_inbound_listener_by_the_address_it_bound() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    // A proxyless gRPC server (app=echo) asks for the listener of the
    // address it listens on, as grpc-go / grpcio xDS servers do.
    let mut s = Ads::connect(
        meshd.xds_addr(),
        node(
            "echo-server-1",
            "demo",
            &[("app", "echo")],
            &[("INSTANCE_IPS", "127.0.0.1")],
        ),
    )
    .await;
    for name in [
        "xds.istio.io/grpc/lds/inbound/127.0.0.1:7070",
        "xds.istio.io/grpc/lds/inbound/[::]:7070",
        "xds.istio.io/grpc/lds/inbound/0.0.0.0:7070",
    ] {
        let names = vec![name.to_string()];
        s.send(types::LISTENER, &names, "", "").await;
        let r = s.recv_ack(&names).await;
        assert_eq!(r.resources.len(), 1, "{name}");
        let l: mesh_xds::pb::envoy::config::listener::v3::Listener =
            mesh_xds::types::unany(&r.resources[0]).unwrap();
        assert_eq!(l.name, name);
        assert!(!l.filter_chains.is_empty(), "{name}: {l:?}");
    }
    meshd.shutdown().await;
}

#[tokio::test]
async fn a_second_stream_of_the_same_workload_keeps_its_registration() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let meshd = start(dir.path()).await;
    let mut a = Ads::connect(
        meshd.xds_addr(),
        node("client-a", "demo", &[("app", "client")], &[]),
    )
    .await;
    a.sync_all().await;
    let eds_subs = eds_names(&a.last[types::CLUSTER]);
    let vm = || {
        node(
            "echo-vm-2",
            "demo",
            &[("app", "echo")],
            &[
                ("AUTO_REGISTER_GROUP", "echo"),
                ("INSTANCE_IPS", "10.9.8.6"),
            ],
        )
    };
    let mut w1 = Ads::connect(meshd.xds_addr(), vm()).await;
    w1.send(types::CLUSTER, &[], "", "").await;
    w1.recv_ack(&[]).await;
    let r = a.recv_ack(&eds_subs).await;
    assert_eq!(r.type_url, types::ENDPOINT, "{}", describe(&r));
    assert_eq!(endpoints(&r)[ECHO_EDS].len(), 2);

    // The workload reconnects (new stream first, then the old one ends, as
    // during a control-plane connection rotation): it stays registered.
    let mut w2 = Ads::connect(meshd.xds_addr(), vm()).await;
    w2.send(types::CLUSTER, &[], "", "").await;
    w2.recv_ack(&[]).await;
    drop(w1);
    a.silent(400).await;
    let configz = json(meshd.http_addr(), "/debug/configz").await;
    assert_eq!(
        configz["autoRegistered"].as_array().unwrap().len(),
        1,
        "{configz}"
    );
    let adsz = json(meshd.http_addr(), "/debug/adsz").await;
    let row = adsz
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "echo-vm-2")
        .unwrap();
    assert_eq!(row["streamCount"], 1, "{adsz}");

    // Its last stream ends: gone.
    drop(w2);
    let r = a.recv_ack(&eds_subs).await;
    assert_eq!(r.type_url, types::ENDPOINT, "{}", describe(&r));
    assert_eq!(endpoints(&r)[ECHO_EDS], ["10.0.0.1:7070"]);
    meshd.shutdown().await;
}
