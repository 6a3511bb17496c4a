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

/// The whole mesh: meshd's xDS drives the split, and the YAML edit reaches
/// the workload as a push under traffic with no failure.
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
}
