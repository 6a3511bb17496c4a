//! meshd on Kubernetes, against a real kube-apiserver and etcd (built by
//! `scripts/kube-peers.sh`, started by `mesh_test_support::kube`): bookinfo's
//! reviews applied with the Kubernetes API routes the real SDK, an
//! EndpointSlice change moves traffic, `kubectl edit` of a VirtualService
//! is pushed, an invalid object that got in is skipped while the rest
//! serves, the admission webhook refuses invalid config with the field and
//! the fix, and an API server restart relists without a new config or a
//! lost request.
//!
//! Each test runs in its own network namespace (root needed), where pods
//! get 10.244.x.y addresses: EndpointSlices may not name loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::kube::{eventually, in_private_netns, meshd, meshd_config};

use std::net::SocketAddr;
use std::time::Duration;

use base64::prelude::{Engine, BASE64_STANDARD};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mesh_control::{Meshd, MeshdHandle};
use mesh_test_support::backends::named_on;
use mesh_test_support::kube::netns::pod_ip;
use mesh_test_support::kube::{istio_crds, KubeCluster, TestPod};
use mesh_test_support::sdk::get;
use mesh_tower::Mesh;

const NS: &str = "bookinfo";
const REVIEWS: &str = "http://reviews.bookinfo.svc.cluster.local:9080/";

/// bookinfo's reviews: the Service, its DestinationRule with subsets and a
/// VirtualService sending everything to `subset`.
fn reviews(subset: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {NS}, labels: {{app: reviews, service: reviews}}}}
spec:
  selector: {{app: reviews}}
  ports:
  - {{name: http, port: 9080}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {NS}}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {NS}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"#
    )
}

/// A cluster with bookinfo's reviews: two pods (v1, v2) with real HTTP
/// servers at their pod IPs, their EndpointSlice and a Node.
async fn bookinfo(cluster: &KubeCluster) {
    cluster.apply_yaml(&istio_crds()).await;
    cluster.create_namespace(NS).await;
    cluster
        .create_node(
            "node-a",
            &[
                ("topology.kubernetes.io/region", "eu"),
                ("topology.kubernetes.io/zone", "eu-1"),
            ],
        )
        .await;
    for (n, version) in [(11, "v1"), (12, "v2")] {
        let name = format!("reviews-{version}");
        named_on(SocketAddr::new(pod_ip(n), 9080), version).await;
        cluster
            .create_pod(
                &TestPod::new(NS, &name, pod_ip(n))
                    .label("app", "reviews")
                    .label("version", version)
                    .service_account("bookinfo-reviews")
                    .node("node-a"),
            )
            .await;
    }
    slice(cluster, true).await;
    cluster.apply_yaml(&reviews("v2")).await;
}

/// The reviews EndpointSlice (as the endpoint-slice controller writes it),
/// with v2 ready or not.
async fn slice(cluster: &KubeCluster, v2_ready: bool) {
    let (v1, v2) = (pod_ip(11), pod_ip(12));
    cluster
        .apply_yaml(&format!(
            r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc12
  namespace: {NS}
  labels: {{kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{{name: http, port: 9080, protocol: TCP}}]
endpoints:
- addresses: ["{v1}"]
  conditions: {{ready: true}}
  nodeName: node-a
  targetRef: {{kind: Pod, name: reviews-v1, namespace: {NS}}}
- addresses: ["{v2}"]
  conditions: {{ready: {v2_ready}}}
  nodeName: node-a
  targetRef: {{kind: Pod, name: reviews-v2, namespace: {NS}}}
"#
        ))
        .await;
}

/// The SDK as bookinfo's productpage, fed by `meshd`.
async fn productpage(meshd: &MeshdHandle) -> Mesh {
    Mesh::xds([format!("http://{}", meshd.xds_addr())])
        .namespace(NS)
        .labels([("app", "productpage"), ("version", "v1")])
        .build()
        .await
        .unwrap()
}

/// Bodies of `n` GETs of reviews.
async fn answers(mesh: &Mesh, n: usize) -> Vec<String> {
    let client = mesh.http_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, flags, body) = get(&client, REVIEWS).await;
        assert_eq!(status, 200, "flags {flags:?}, body {body:?}");
        out.push(body);
    }
    out
}

async fn until_all(mesh: &Mesh, want: &str) {
    eventually(&format!("every answer is {want}"), || async {
        answers(mesh, 4).await.iter().all(|b| b == want)
    })
    .await;
}

fn virtual_services(cluster: &KubeCluster) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    Api::namespaced_with(cluster.client(), NS, &ar)
}

#[test]
fn bookinfo_applied_with_the_api_routes_the_sdk_and_follows_edits() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        bookinfo(&cluster).await;
        let meshd = meshd(&cluster).await;
        assert!(
            meshd.generation().is_some(),
            "meshd serves after the first list"
        );
        let mesh = productpage(&meshd).await;

        // The VirtualService sends everything to subset v2, which the
        // DestinationRule defines by the Pods' labels.
        until_all(&mesh, "v2").await;
        let model = mesh.current();
        let clusters = format!("{:?}", model.clusters);
        assert!(
            clusters.contains("eu/eu-1") || clusters.contains("eu-1"),
            "locality from the Node: {clusters}"
        );

        // kubectl edit: now v1.
        virtual_services(&cluster)
            .patch(
                "reviews",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}})),
            )
            .await
            .unwrap();
        until_all(&mesh, "v1").await;

        // No subset: both pods serve, until v2's endpoint turns not ready.
        virtual_services(&cluster)
            .patch(
                "reviews",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"http": [{"route": [{"destination": {"host": "reviews"}}]}]}})),
            )
            .await
            .unwrap();
        eventually("both pods answer", || async {
            let a = answers(&mesh, 8).await;
            a.iter().any(|b| b == "v1") && a.iter().any(|b| b == "v2")
        })
        .await;
        slice(&cluster, false).await;
        // A withdrawn endpoint: wait until the SDK holds the new EDS
        // (answers alone could all come from v1 by chance before it lands).
        eventually("the SDK drops v2's endpoint", || async {
            mesh.current()
                .clusters
                .values()
                .filter(|c| c.host.starts_with("reviews.") && c.subset.is_none())
                .all(|c| {
                    c.endpoints
                        .iter()
                        .all(|e| e.address != pod_ip(12).to_string())
                })
        })
        .await;
        assert!(answers(&mesh, 20).await.iter().all(|b| b == "v1"));

        // An invalid VirtualService that got in (no webhook here; the
        // CRD's schema cannot tell a regex that does not compile) is
        // skipped; everything else keeps serving.
        let before = meshd.generation().unwrap();
        cluster
            .apply_yaml(&format!(
                r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broken, namespace: {NS}}}
spec:
  hosts: [ratings]
  http:
  - match: [{{uri: {{regex: "/reviews/(unclosed"}}}}]
    route: [{{destination: {{host: ratings}}}}]
"#
            ))
            .await;
        let ctl = meshd.controller().clone();
        eventually("meshd skips the broken VirtualService", || {
            let ctl = ctl.clone();
            async move {
                ctl.generation().is_some_and(|g| {
                    g.number > before
                        && g.skipped.iter().any(|(k, why)| {
                            k == "VirtualService/bookinfo/broken"
                                && why
                                    .iter()
                                    .any(|l| l.contains("spec.http[0].match[0].uri.regex"))
                        })
                })
            }
        })
        .await;
        assert!(answers(&mesh, 10).await.iter().all(|b| b == "v1"));
        // And /debug/configz says so.
        let (code, body) = common::http_get(meshd.http_addr(), "/debug/configz").await;
        assert_eq!(code, 200);
        let z: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(z["kubernetes"]["synced"], true, "{z}");
        assert_eq!(z["kubernetes"]["objects"]["Pod"], 2, "{z}");
        assert_eq!(
            z["kubernetes"]["skipped"][0]["object"], "VirtualService/bookinfo/broken",
            "{z}"
        );
        meshd.shutdown().await;
    });
}

#[test]
fn an_api_server_restart_relists_without_a_new_config_or_a_failed_request() {
    in_private_netns(|| async {
        let mut cluster = KubeCluster::start().await;
        bookinfo(&cluster).await;
        let meshd = meshd(&cluster).await;
        let mesh = productpage(&meshd).await;
        until_all(&mesh, "v2").await;
        let generation = meshd.generation();
        let store = meshd.kube_store().unwrap().clone();
        let relists = store.relists();

        // While the API server is away, nothing serving is lost.
        cluster.stop_apiserver().await;
        assert!(answers(&mesh, 10).await.iter().all(|b| b == "v2"));
        cluster.start_apiserver().await;

        // The watchers come back (a new API server's watch cache starts
        // at etcd's head: older resourceVersions are 410 Gone, so every
        // kind lists again) and find what they had: no new generation.
        eventually("every kind lists again", || {
            let store = store.clone();
            async move { store.relists() >= relists + 15 && store.synced() }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            meshd.generation(),
            generation,
            "a relist of the same objects pushes nothing"
        );
        assert!(answers(&mesh, 10).await.iter().all(|b| b == "v2"));

        // And a change after the restart is pushed.
        cluster.apply_yaml(&reviews("v1")).await;
        until_all(&mesh, "v1").await;
        meshd.shutdown().await;
    });
}

#[test]
fn the_webhook_refuses_invalid_config_with_the_field_and_the_fix() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        bookinfo(&cluster).await;
        let meshd = meshd(&cluster).await;
        let webhook = meshd.webhook_addr().unwrap();
        let ca_bundle = BASE64_STANDARD.encode(meshd.root_cert_pem());
        cluster
            .apply_yaml(&format!(
                r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: meshd-validator}}
webhooks:
- name: validation.istio.io
  clientConfig:
    url: https://{webhook}/validate
    caBundle: {ca_bundle}
  rules:
  - apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io]
    apiVersions: ["*"]
    operations: [CREATE, UPDATE]
    resources: ["*"]
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
"#
            ))
            .await;

        let invalid: DynamicObject = serde_yaml_value(&format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broken, namespace: {NS}}}
spec:
  hosts: [reviews]
  http:
  - match: [{{uri: {{regex: "/reviews/(unclosed"}}}}]
    route: [{{destination: {{host: reviews}}}}]
"#
        ));
        let api = virtual_services(&cluster);
        // The webhook configuration takes a moment to reach the API
        // server's admission chain.
        let refusal = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        eventually("the API server asks meshd", || {
            let api = api.clone();
            let invalid = invalid.clone();
            let refusal = refusal.clone();
            async move {
                match api.create(&Default::default(), &invalid).await {
                    Err(kube::Error::Api(e)) => {
                        *refusal.lock().unwrap() = e.message;
                        true
                    }
                    Err(e) => panic!("not an API refusal: {e}"),
                    Ok(_) => {
                        api.delete("broken", &Default::default()).await.unwrap();
                        false
                    }
                }
            }
        })
        .await;
        let refusal = refusal.lock().unwrap().clone();
        assert!(
            refusal.contains("meshd refused VirtualService")
                && refusal.contains("spec.http[0].match[0].uri.regex")
                && refusal.contains("VirtualService/bookinfo/broken"),
            "{refusal}"
        );

        // Valid config goes through the same webhook.
        cluster.apply_yaml(&reviews("v1")).await;
        let mesh = productpage(&meshd).await;
        until_all(&mesh, "v1").await;
        meshd.shutdown().await;
    });
}

fn serde_yaml_value(yaml: &str) -> DynamicObject {
    let (docs, err) = mesh_core::config::yaml::parse_documents(yaml);
    assert!(err.is_none(), "{err:?}");
    serde_json::from_value(docs.into_iter().next().unwrap().value).unwrap()
}

#[test]
fn replicas_share_the_root_and_a_client_fails_over_without_a_failed_request() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        bookinfo(&cluster).await;
        let a = meshd(&cluster).await;
        let b = meshd(&cluster).await;
        // One root for every replica, kept in Istio's Secret.
        assert_eq!(a.root_cert_pem(), b.root_cert_pem());
        let secret: k8s_openapi::api::core::v1::Secret =
            Api::namespaced(cluster.client(), "istio-system")
                .get("istio-ca-secret")
                .await
                .unwrap();
        let in_secret = &secret.data.unwrap()["ca-cert.pem"].0;
        assert_eq!(String::from_utf8_lossy(in_secret), a.root_cert_pem());

        let mesh = Mesh::xds([
            format!("http://{}", a.xds_addr()),
            format!("http://{}", b.xds_addr()),
        ])
        .namespace(NS)
        .labels([("app", "productpage"), ("version", "v1")])
        .build()
        .await
        .unwrap();
        until_all(&mesh, "v2").await;

        // Requests run without pause while the replica the client is on
        // goes away.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let client = mesh.http_client();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, flags, body) = get(&client, REVIEWS).await;
                    if status == 200 {
                        ok += 1;
                    } else {
                        failed.push(format!("{status} {flags} {body}"));
                    }
                }
                (ok, failed)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (on, other) = if a.controller().nodes().is_empty() {
            (b, a)
        } else {
            (a, b)
        };
        assert_eq!(
            on.controller().nodes().len(),
            1,
            "the client is on one replica"
        );
        on.shutdown().await;
        eventually("the client reconnects to the other replica", || async {
            !other.controller().nodes().is_empty()
        })
        .await;
        // A change after the failover reaches the client through the
        // replica that is left.
        cluster.apply_yaml(&reviews("v1")).await;
        until_all(&mesh, "v1").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            ok as usize + failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 50, "the load ran: {ok} requests");
        other.shutdown().await;
    });
}

#[test]
fn the_leader_publishes_the_root_and_writes_analysis_to_status() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        bookinfo(&cluster).await;
        let mut config = meshd_config(&cluster).await;
        config.kube_lease = Duration::from_secs(2);
        config.kube_resync = Duration::from_secs(1);
        let a = Meshd::start(config.clone()).await.unwrap();
        let b = Meshd::start(config).await.unwrap();
        eventually("one replica leads", || async {
            a.is_leader() != b.is_leader()
        })
        .await;

        // Every namespace gets the root, new ones too.
        let root = a.root_cert_pem();
        let configmap = |ns: &'static str| {
            let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
                Api::namespaced(cluster.client(), ns);
            async move {
                api.get_opt("istio-ca-root-cert")
                    .await
                    .unwrap()
                    .and_then(|cm| cm.data)
                    .and_then(|d| d.get("root-cert.pem").cloned())
            }
        };
        eventually("bookinfo has istio-ca-root-cert", || async {
            configmap(NS).await.as_deref() == Some(root.as_str())
        })
        .await;
        cluster.create_namespace("late").await;
        eventually("a new namespace gets it too", || async {
            configmap("late").await.as_deref() == Some(root.as_str())
        })
        .await;
        // A deleted one comes back.
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client(), NS)
            .delete("istio-ca-root-cert", &Default::default())
            .await
            .unwrap();
        assert_eq!(configmap(NS).await, None);
        eventually("a deleted istio-ca-root-cert comes back", || async {
            configmap(NS).await.as_deref() == Some(root.as_str())
        })
        .await;

        // Analysis lands in status: a warning as Istio's
        // validationMessages, a skipped object as a condition.
        cluster
            .apply_yaml(&format!(
                r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-all, namespace: {NS}}}
spec:
  action: ALLOW
  rules: [{{}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broken, namespace: {NS}}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: reviews, subset: v9}}}}]
"#
            ))
            .await;
        let status =
            |plural: &'static str, kind: &'static str, group: &'static str, name: &'static str| {
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, "v1", kind),
                    plural,
                );
                let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NS, &ar);
                async move { api.get(name).await.unwrap().data["status"].clone() }
            };
        eventually("the warning is in the policy's status", || async {
            status(
                "authorizationpolicies",
                "AuthorizationPolicy",
                "security.istio.io",
                "allow-all",
            )
            .await["validationMessages"]
                .as_array()
                .is_some_and(|m| {
                    m.iter().any(|m| {
                        m["type"]["code"] == "authz-allow-all-rule" && m["level"] == "WARNING"
                    })
                })
        })
        .await;
        eventually("the skipped VirtualService says why", || async {
            let s = status(
                "virtualservices",
                "VirtualService",
                "networking.istio.io",
                "broken",
            )
            .await;
            s["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "Reconciled"
                        && c["status"] == "False"
                        && c["message"].as_str().is_some_and(|m| m.contains("v9"))
                })
            })
        })
        .await;

        // The leader goes away: the other replica takes over within the
        // lease and keeps publishing.
        let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
        leader.shutdown().await;
        eventually("the follower takes over", || async { follower.is_leader() }).await;
        cluster.create_namespace("later").await;
        eventually("the new leader publishes", || async {
            configmap("later").await.as_deref() == Some(root.as_str())
        })
        .await;
        follower.shutdown().await;
    });
}

#[test]
fn files_and_the_cluster_serve_together() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        bookinfo(&cluster).await;
        // The file half: a DestinationRule-free VirtualService for a
        // ServiceEntry host, next to the cluster's reviews.
        let dir = tempfile::tempdir().unwrap();
        let ratings = named_on(SocketAddr::new(pod_ip(31), 9080), "ratings-from-files").await;
        std::fs::write(
            dir.path().join("ratings.yaml"),
            format!(
                r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: {NS}}}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: "{}"}}]
"#,
                ratings.ip()
            ),
        )
        .unwrap();
        let mut config = meshd_config(&cluster).await;
        config.config_dir = Some(dir.path().to_path_buf());
        let meshd = Meshd::start(config).await.unwrap();
        let mesh = productpage(&meshd).await;
        until_all(&mesh, "v2").await;
        let client = mesh.http_client();
        let (status, flags, body) =
            get(&client, "http://ratings.bookinfo.svc.cluster.local:9080/").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ratings-from-files"),
            "{flags}"
        );
        let g = meshd.controller().generation().unwrap();
        assert_eq!(g.files.len(), 1, "{:?}", g.files);
        assert!(g.kube_objects > 0);
        meshd.shutdown().await;
    });
}

/// The repo's bookinfo (`examples/bookinfo`: Services, Deployments, the
/// DestinationRule, VirtualServices, ServiceEntry, PeerAuthentication and
/// AuthorizationPolicies) applied with the Kubernetes API compiles, for
/// productpage, to exactly what local mode compiles from the same files.
#[test]
fn the_repos_bookinfo_from_the_api_compiles_as_from_its_files() {
    in_private_netns(|| async {
        let cluster = KubeCluster::start().await;
        cluster.apply_yaml(&istio_crds()).await;
        cluster.create_namespace(NS).await;
        cluster
            .create_namespace(common::kube::MESHD_NAMESPACE)
            .await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files {
            cluster
                .apply_yaml(&std::fs::read_to_string(f).unwrap())
                .await;
        }
        let meshd = meshd(&cluster).await;
        let g = meshd.controller().generation().unwrap();
        assert!(g.skipped.is_empty(), "{:?}", g.skipped);
        let from_api = productpage(&meshd).await;
        let from_files = Mesh::local(&dir)
            .namespace(NS)
            .labels([("app", "productpage"), ("version", "v1")])
            .build()
            .await
            .unwrap();
        let (a, f) = (from_api.current(), from_files.current());
        assert!(!f.outbound.is_empty());
        // The cluster also has its own `kubernetes.default` Service, which
        // the files do not: leave it out of the comparison.
        let own = |v: serde_json::Value| -> serde_json::Value {
            let serde_json::Value::Object(m) = v else {
                panic!("not a map")
            };
            serde_json::Value::Object(
                m.into_iter()
                    .filter(|(k, _)| !k.contains("kubernetes.default.svc"))
                    .collect(),
            )
        };
        assert!(a
            .outbound
            .keys()
            .any(|k| k.starts_with("kubernetes.default.svc")));
        assert_eq!(
            own(serde_json::to_value(&a.outbound).unwrap()),
            own(serde_json::to_value(&f.outbound).unwrap()),
            "routes"
        );
        assert_eq!(
            own(serde_json::to_value(&a.clusters).unwrap()),
            own(serde_json::to_value(&f.clusters).unwrap()),
            "clusters"
        );
        assert_eq!(
            serde_json::to_value(&a.inbound).unwrap(),
            serde_json::to_value(&f.inbound).unwrap(),
            "inbound policy"
        );
        meshd.shutdown().await;
    });
}
