//! Route selection, local answers, split, rewrites, header operations,
//! mirrors.

use std::sync::Arc;

use http::{Request, StatusCode};
use mesh_core::model::OutboundPolicy;

use super::*;
use crate::body;

const V1V2_BY_USER: &str = r#"
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
"#;

#[tokio::test(start_paused = true)]
async fn routes_by_host_in_every_spelling() {
    let (inner, log) = ok_service();
    let svc = stack(model(""), ClientOptions::default(), inner);
    for uri in [
        "http://reviews:9080/",
        "http://reviews.default:9080/",
        "http://reviews.default.svc:9080/",
        "http://REVIEWS.default.svc.cluster.local:9080/x",
    ] {
        let r = send(&svc, get(uri)).await;
        assert_eq!(r.status(), 200, "{uri}");
    }
    // Host header only, as an HTTP/1 origin-form request.
    let req = Request::builder()
        .uri("/")
        .header("host", "ratings:9090")
        .body(body::empty())
        .unwrap();
    assert_eq!(send(&svc, req).await.status(), 200);
    let seen = log.all();
    assert_eq!(seen.len(), 5);
    for s in &seen[..4] {
        assert_eq!(
            &*s.upstream.cluster,
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(s.upstream.attempt, 1);
    }
    assert_eq!(
        &*seen[4].upstream.cluster,
        "outbound|9090||ratings.default.svc.cluster.local"
    );
}

#[tokio::test(start_paused = true)]
async fn routes_by_header_and_path_and_404s_otherwise() {
    let (inner, log) = ok_service();
    let svc = stack(
        model(&reviews_vs(V1V2_BY_USER)),
        ClientOptions::default(),
        inner,
    );
    let req = Request::builder()
        .uri("http://reviews:9080/anything")
        .header("end-user", "jason")
        .body(body::empty())
        .unwrap();
    assert_eq!(send(&svc, req).await.status(), 200);
    assert_eq!(
        send(&svc, get("http://reviews:9080/api/x")).await.status(),
        200
    );
    let subsets: Vec<_> = log
        .all()
        .iter()
        .map(|s| s.upstream.subset.as_deref().map(str::to_string))
        .collect();
    assert_eq!(subsets, [Some("v2".to_string()), Some("v1".to_string())]);
    let r = send(&svc, get("http://reviews:9080/other")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(flag(&r), Some("NR"));
    assert_eq!(log.len(), 2);
    // gRPC requests get a gRPC status instead.
    let r = send(&svc, grpc("http://reviews:9080/pkg.Svc/Other")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "14");
}

#[tokio::test(start_paused = true)]
async fn unknown_hosts_pass_through_or_get_503_under_registry_only() {
    let (inner, log) = ok_service();
    let m = model("");
    assert_eq!(m.mesh.outbound_policy, OutboundPolicy::AllowAny);
    let svc = stack(m.clone(), ClientOptions::default(), inner.clone());
    assert_eq!(send(&svc, get("https://example.com/x")).await.status(), 200);
    let s = &log.all()[0];
    assert!(s.upstream.is_passthrough());
    assert_eq!((&*s.upstream.host, s.upstream.port), ("example.com", 443));

    let mut strict = (*m).clone();
    strict.mesh.outbound_policy = OutboundPolicy::RegistryOnly;
    let svc = stack(Arc::new(strict), ClientOptions::default(), inner);
    let r = send(&svc, get("http://example.com/x")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(flag(&r), Some("NR"));
    let (b, _) = read(r).await;
    assert_eq!(
        b,
        "no route to example.com: not in the mesh registry and outboundTrafficPolicy is REGISTRY_ONLY\n"
    );
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn weighted_split_within_bounds() {
    let vs = reviews_vs(
        r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"#,
    );
    let seed = rng::seed_for_test();
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    for _ in 0..10_000 {
        send(&svc, get("http://reviews:9080/")).await;
    }
    let v2 = log
        .all()
        .iter()
        .filter(|s| s.upstream.subset.as_deref() == Some("v2"))
        .count();
    // 10% of 10 000 = 1000, sd 30: +-200 is over 6 sd.
    assert!(
        (800..=1200).contains(&v2),
        "MESH_TEST_SEED={seed}: v2 got {v2} of 10000"
    );
}

#[tokio::test(start_paused = true)]
async fn rewrites_path_and_authority() {
    let vs = reviews_vs(
        r#"
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /api/v1/, authority: reviews-internal}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /r/}}]
    rewrite: {uriRegexRewrite: {match: '^/r/(\w+)/(\w+)', rewrite: '/\2/\1'}}
    route: [{destination: {host: reviews}}]
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    send(&svc, get("http://reviews:9080/v1/books?id=3")).await;
    send(&svc, get("http://reviews:9080/r/a/b")).await;
    let seen = log.all();
    assert_eq!(seen[0].uri.path(), "/api/v1/books");
    assert_eq!(seen[0].uri.query(), Some("id=3"));
    assert_eq!(
        seen[0].uri.authority().map(|a| a.as_str()),
        Some("reviews-internal")
    );
    assert_eq!(seen[1].uri.path(), "/b/a");
}

#[tokio::test(start_paused = true)]
async fn redirects_and_direct_responses_answer_locally() {
    let vs = reviews_vs(
        r#"
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: web.example.com, scheme: https, redirectCode: 308}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let r = send(&svc, get("http://reviews:9080/old/page?x=1")).await;
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "https://web.example.com/new?x=1");
    let r = send(&svc, get("http://reviews:9080/health")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(read(r).await.0, "down for maintenance");
    assert_eq!(log.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn header_operations_on_request_and_response() {
    let vs = reviews_vs(
        r#"
  - headers:
      request: {set: {x-route: r}, add: {x-multi: a}, remove: [x-secret]}
      response: {set: {x-served: mesh}, remove: [server]}
    route:
    - destination: {host: reviews, subset: v1}
      headers:
        request: {set: {x-dest: v1, x-route: dest}}
        response: {add: {x-dest: v1}}
"#,
    );
    let (inner, log) = scripted(|_, _| async {
        let mut r = status(200);
        r.headers_mut()
            .insert("server", "upstream".parse().unwrap());
        Ok(r)
    });
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let req = Request::builder()
        .uri("http://reviews:9080/")
        .header("x-secret", "s")
        .header("x-multi", "0")
        .body(body::empty())
        .unwrap();
    let r = send(&svc, req).await;
    let h = &log.all()[0].headers;
    assert!(h.get("x-secret").is_none());
    assert_eq!(h.get_all("x-multi").iter().count(), 2);
    assert_eq!(h["x-dest"], "v1");
    // The route's `set` is applied after the destination's, so it wins (Envoy).
    assert_eq!(h["x-route"], "r");
    assert_eq!(r.headers()["x-served"], "mesh");
    assert_eq!(r.headers()["x-dest"], "v1");
    assert!(r.headers().get("server").is_none());
}

#[tokio::test(start_paused = true)]
async fn mirror_never_delays_or_fails_the_main_request() {
    let vs = reviews_vs(
        r#"
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100}
"#,
    );
    let (inner, log) = scripted(|_, req: Request<MeshBody>| async move {
        let up = req.extensions().get::<Upstream>().unwrap().clone();
        if up.subset.as_deref() == Some("v2") {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            return Err::<_, BoxError>("mirror target down".into());
        }
        Ok(status(200))
    });
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    let start = tokio::time::Instant::now();
    let req = Request::builder()
        .method("POST")
        .uri("http://reviews:9080/p")
        .body(body::full("payload"))
        .unwrap();
    let r = send(&svc, req).await;
    assert_eq!(r.status(), 200);
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    tokio::task::yield_now().await;
    let seen = log.all();
    assert_eq!(seen.len(), 2);
    let shadow = seen
        .iter()
        .find(|s| s.upstream.subset.as_deref() == Some("v2"))
        .expect("mirrored");
    assert_eq!(
        shadow.uri.authority().map(|a| a.as_str()),
        Some("reviews-shadow:9080")
    );
}

#[tokio::test(start_paused = true)]
async fn mirror_percentage_zero_never_mirrors() {
    let vs = reviews_vs(
        r#"
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 0}
"#,
    );
    let (inner, log) = ok_service();
    let svc = stack(model(&vs), ClientOptions::default(), inner);
    for _ in 0..100 {
        send(&svc, get("http://reviews:9080/")).await;
    }
    tokio::task::yield_now().await;
    assert_eq!(log.len(), 100);
}

#[tokio::test(start_paused = true)]
async fn new_model_applies_to_next_request_in_flight_keeps_its_own() {
    use tower::Layer;
    let v1 = model(&reviews_vs(
        "  - route: [{destination: {host: reviews, subset: v1}}]\n",
    ));
    let v2 = model(&reviews_vs(
        "  - route: [{destination: {host: reviews, subset: v2}}]\n",
    ));
    let (inner, log) = scripted(|n, _| async move {
        if n == 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        Ok(status(200))
    });
    let (tx, rx) = tokio::sync::watch::channel(v1);
    let svc: BoxClient =
        BoxCloneService::new(crate::client::layer(rx, ClientOptions::default()).layer(inner));
    let slow = tokio::spawn(crate::client::call::oneshot(
        svc.clone(),
        get("http://reviews:9080/"),
    ));
    tokio::task::yield_now().await;
    tx.send(v2.clone()).unwrap();
    send(&svc, get("http://reviews:9080/")).await;
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let seen = log.all();
    assert_eq!(seen[0].upstream.subset.as_deref(), Some("v1"));
    assert_eq!(seen[1].upstream.subset.as_deref(), Some("v2"));
    assert!(Arc::ptr_eq(&seen[1].upstream.model, &v2));
}
