//! The examples' outcomes, asserted: what a user running them would see.

/// 90/10 within statistical bounds, 0 failures while the YAML changes, then 50/50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rollout_shifts_traffic_without_failures() {
    let r = mesh_examples::canary::run().await.expect("canary run");
    // 1000 draws at p=0.1: sd ~9.5, so 100 +- 40 is over 4 sd.
    assert!((60..=140).contains(&r.before.1), "{r:?}");
    assert_eq!(r.during.0 + r.during.1, 500);
    // 1000 draws at p=0.5: sd ~15.8, so 500 +- 80 is over 5 sd.
    assert!((420..=580).contains(&r.after.1), "{r:?}");
}

/// One of three backends always fails: retries and outlier detection keep
/// the success rate above 99.9%, and the bad backend stops getting traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_masks_a_failing_backend() {
    let r = mesh_examples::resilience::run(2000)
        .await
        .expect("resilience run");
    assert!(r.success_rate() >= 99.9, "{r:?}");
    assert!(
        r.bad_served <= 10,
        "the failing backend was not ejected: {r:?}"
    );
    assert!(r.good_served.0 > 500 && r.good_served.1 > 500, "{r:?}");
}

/// The whole mesh: meshd's xDS drives the split, the YAML edit reaches
/// the workload as a push under traffic with no failure, v2's failures
/// show, and both ends' Istio metrics count every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_demo_rolls_out_through_meshd() {
    let r = mesh_examples::mesh_demo::run().await.expect("demo run");
    assert!((60..=140).contains(&r.before.1), "{r:?}");
    assert_eq!(r.during.0 + r.during.1, 500);
    assert!((420..=580).contains(&r.after.1), "{r:?}");
    assert!(r.generations.1 > r.generations.0, "{r:?}");
    assert!(
        r.acked.iter().any(|(t, _)| t == "RouteConfiguration"),
        "{r:?}"
    );
    // v2 fails exactly one in four of its requests; v1 never does.
    let get = |body: &str, code: u16| r.degraded.get(&(body.to_string(), code)).copied();
    let (v2_ok, v2_bad) = (get("v2", 200).unwrap_or(0), get("v2", 503).unwrap_or(0));
    assert_eq!(v2_bad, (v2_ok + v2_bad) / 4, "{r:?}");
    assert!(v2_bad > 0 && get("v1", 503).is_none(), "{r:?}");
    assert_eq!(r.degraded.values().sum::<u32>(), 200);
    // Both ends report every edge, over mTLS, and agree on the counts.
    let edge = |dest: &str, code: &str| {
        r.telemetry
            .iter()
            .find(|e| e.source == "productpage-v1" && e.destination == dest && e.code == code)
            .unwrap_or_else(|| panic!("no {dest} {code} edge: {r:?}"))
    };
    let v1 = edge("reviews-v1", "200");
    assert_eq!(
        u64::from(r.before.0 + r.during.0 + r.after.0 + get("v1", 200).unwrap_or(0)),
        v1.by_source
    );
    assert_eq!(u64::from(v2_bad), edge("reviews-v2", "503").by_source);
    for e in &r.telemetry {
        assert_eq!(e.by_source, e.by_destination, "{e:?}");
        assert_eq!(e.security, "mutual_tls", "{e:?}");
    }
    let names: Vec<&str> = r.metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["productpage-v1", "reviews-v1", "reviews-v2"]);
}
