//! CSDS with envoy-types' generated client, in process on a paused clock:
//! what the server reports about two connected ADS clients, after ACKs, a
//! NACK, a response in flight and a route held back by make-before-break.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, NodeMatcher, StringMatcher,
};
use envoy_types::pb::envoy::service::status::v3::{
    client_config::GenericXdsConfig,
    client_status_discovery_service_client::ClientStatusDiscoveryServiceClient, ClientConfig,
    ClientStatusRequest, ConfigStatus,
};
use mesh_test_support::ads::{self, snapshot, Client, Delta, NODE};
use mesh_xds::server::{AdsServer, SnapshotCache};
use mesh_xds::types;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const OTHER: &str = "grpc-client-2";

fn by_id(id: &str) -> NodeMatcher {
    NodeMatcher {
        node_id: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(id.into())),
            ignore_case: false,
        }),
        node_metadatas: vec![],
    }
}

fn find<'a>(c: &'a ClientConfig, type_url: &str, name: &str) -> &'a GenericXdsConfig {
    c.generic_xds_configs
        .iter()
        .find(|g| g.type_url == type_url && g.name == name)
        .unwrap_or_else(|| panic!("no {type_url} {name} in {:#?}", c.generic_xds_configs))
}

fn statuses(g: &GenericXdsConfig) -> (ConfigStatus, ClientResourceStatus) {
    (
        ConfigStatus::try_from(g.config_status).unwrap(),
        ClientResourceStatus::try_from(g.client_status).unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn csds_reports_acked_nacked_stale_and_held() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a"], &["a"]));
    cache.set_snapshot(OTHER, snapshot(&["a"], &["a"]));
    let addr = ads::serve(AdsServer::new(cache.clone()));
    let mut c = Client::connect(&addr, ads::node(NODE)).await;
    let mut other = Client::connect(&addr, ads::node(OTHER)).await;
    other.send(types::CLUSTER, &[], None).await;
    other.recv().await;

    // CDS ACKed; LDS NACKed; RDS sent and not answered.
    c.send(types::CLUSTER, &[], None).await;
    let cds = c.recv().await;
    c.send(types::CLUSTER, &[], Some(&cds)).await;
    c.send(types::LISTENER, &[], None).await;
    let lds = c.recv().await;
    c.nack(&lds, &[], "listener svc:80: unsupported filter")
        .await;
    c.send(types::ROUTE, &["r"], None).await;
    let rds = c.recv().await;
    c.silent().await;

    let mut csds = ClientStatusDiscoveryServiceClient::new(addr.channel().await);
    // Everyone.
    let all = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = all
        .config
        .iter()
        .map(|c| c.node.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, [NODE, OTHER]);

    // One node by id.
    let one = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![by_id(NODE)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.config.len(), 1);
    let cfg = &one.config[0];
    assert_eq!(cfg.node.as_ref().unwrap().id, NODE);

    let g = find(cfg, types::CLUSTER, "a");
    assert_eq!(
        statuses(g),
        (ConfigStatus::Synced, ClientResourceStatus::Acked)
    );
    assert_eq!(g.version_info, cds.version_info);
    assert_eq!(g.xds_config.as_ref(), Some(&cds.resources[0]));
    assert!(g.last_updated.is_some());

    let g = find(cfg, types::LISTENER, "svc:80");
    assert_eq!(
        statuses(g),
        (ConfigStatus::Error, ClientResourceStatus::Nacked)
    );
    let err = g.error_state.as_ref().unwrap();
    assert_eq!(err.details, "listener svc:80: unsupported filter");
    assert_eq!(err.version_info, lds.version_info);
    assert_eq!(err.failed_configuration.as_ref(), Some(&lds.resources[0]));
    assert!(g.xds_config.is_none(), "nothing accepted yet");

    let g = find(cfg, types::ROUTE, "r");
    assert_eq!(
        statuses(g),
        (ConfigStatus::Stale, ClientResourceStatus::Requested)
    );
    assert_eq!(g.version_info, rds.version_info);

    // A split onto a new cluster: CDS in flight, the route held back.
    c.send(types::ROUTE, &["r"], Some(&rds)).await;
    cache.set_snapshot(NODE, snapshot(&["a", "b"], &["a", "b"]));
    let cds2 = c.recv().await;
    assert_eq!(cds2.type_url, types::CLUSTER);
    c.silent().await;

    // The streaming variant: one answer per request, contents excluded.
    let (tx, rx) = mpsc::channel(4);
    let mut answers = csds
        .stream_client_status(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(ClientStatusRequest {
        node_matchers: vec![by_id(NODE)],
        exclude_resource_contents: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let resp = answers.message().await.unwrap().unwrap();
    let cfg = &resp.config[0];
    let g = find(cfg, types::CLUSTER, "b");
    assert_eq!(
        statuses(g),
        (ConfigStatus::Stale, ClientResourceStatus::Requested)
    );
    assert!(g.xds_config.is_none());
    let g = find(cfg, types::CLUSTER, "a");
    assert_eq!(
        statuses(g),
        (ConfigStatus::Stale, ClientResourceStatus::Acked)
    );
    let g = find(cfg, types::ROUTE, "r");
    assert_eq!(
        ConfigStatus::try_from(g.config_status).unwrap(),
        ConfigStatus::NotSent,
        "the split is held back"
    );
    assert_eq!(
        g.version_info, rds.version_info,
        "the client still runs the old routes"
    );

    // After the ACKs the split goes out and everything is SYNCED.
    c.send(types::CLUSTER, &[], Some(&cds2)).await;
    let rds2 = c.recv().await;
    assert_eq!(rds2.type_url, types::ROUTE);
    c.send(types::ROUTE, &["r"], Some(&rds2)).await;
    c.silent().await;
    tx.send(ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix("GRPC-CLIENT-1".into())),
                ignore_case: true,
            }),
            node_metadatas: vec![],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let resp = answers.message().await.unwrap().unwrap();
    assert_eq!(resp.config.len(), 1);
    let cfg = &resp.config[0];
    for (t, n) in [
        (types::CLUSTER, "a"),
        (types::CLUSTER, "b"),
        (types::ROUTE, "r"),
    ] {
        assert_eq!(
            statuses(find(cfg, t, n)),
            (ConfigStatus::Synced, ClientResourceStatus::Acked),
            "{t} {n}"
        );
    }

    // Metadata matchers are refused, not ignored.
    let err = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![NodeMatcher {
                node_id: None,
                node_metadatas: vec![Default::default()],
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A client that leaves is no longer reported.
    drop(other);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let all = csds
            .fetch_client_status(ClientStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        if all.config.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "OTHER still reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn csds_reports_delta_clients_with_resource_versions() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, snapshot(&["a", "b"], &["a"]));
    let addr = ads::serve(AdsServer::new(cache.clone()));
    let mut delta = Delta::connect(&addr, ads::node(NODE)).await;
    delta.subscribe(types::CLUSTER, &[]).await;
    let r = delta.recv().await;
    assert_eq!(r.resources.len(), 2);
    delta.ack(&r).await;

    let mut csds = ClientStatusDiscoveryServiceClient::new(addr.channel().await);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let resp = csds
            .fetch_client_status(ClientStatusRequest {
                node_matchers: vec![by_id(NODE)],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let cfg = &resp.config[0];
        let g = find(cfg, types::CLUSTER, "b");
        if statuses(g) == (ConfigStatus::Synced, ClientResourceStatus::Acked) {
            let sent = r.resources.iter().find(|x| x.name == "b").unwrap();
            assert_eq!(
                g.version_info, sent.version,
                "Delta: the resource's own version"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never SYNCED: {g:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
