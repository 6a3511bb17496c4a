use super::*;

fn cfg() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 3,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(10),
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    }
}

fn det(n: u32, cfg: OutlierConfig) -> OutlierDetector<u32> {
    let mut d = OutlierDetector::new(cfg);
    d.update_endpoints(&(0..n).collect::<Vec<_>>());
    d
}

#[test]
fn ejects_after_n_consecutive_5xx_and_success_resets() {
    let t0 = Instant::now();
    let mut d = det(3, cfg());
    assert_eq!(d.on_result(&0, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(200), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(503), t0), None);
    assert!(!d.is_ejected(&0, t0));
    let e = d.on_result(&0, Outcome::Status(500), t0);
    assert_eq!(
        e,
        Some(Ejection {
            reason: EjectReason::Consecutive5xx,
            duration: Duration::from_secs(10),
            count: 1
        })
    );
    assert!(d.is_ejected(&0, t0));
    assert!(!d.is_ejected(&1, t0));
    assert_eq!(d.stats().ejections_total, 1);
}

#[test]
fn returns_when_time_is_up_and_ejection_time_grows() {
    let t0 = Instant::now();
    let mut d = det(3, cfg());
    for _ in 0..3 {
        d.on_result(&1, Outcome::Status(500), t0);
    }
    assert!(d.is_ejected(&1, t0 + Duration::from_secs(9)));
    assert!(!d.is_ejected(&1, t0 + Duration::from_secs(10)));
    let back = d.tick(t0 + Duration::from_secs(10));
    assert_eq!(back, vec![1]);
    // Fails again right away: twice the base time.
    let t1 = t0 + Duration::from_secs(10);
    let mut last = None;
    for _ in 0..3 {
        last = d.on_result(&1, Outcome::Status(502), t1);
    }
    assert_eq!(
        last.map(|e| (e.duration, e.count)),
        Some((Duration::from_secs(20), 2))
    );
    assert!(d.is_ejected(&1, t1 + Duration::from_secs(19)));
    assert!(!d.is_ejected(&1, t1 + Duration::from_secs(20)));
}

#[test]
fn ejection_time_is_capped_and_multiplier_decays() {
    let t0 = Instant::now();
    let c = OutlierConfig {
        base_ejection_time: Duration::from_secs(200),
        ..cfg()
    };
    let mut d = det(2, c);
    let mut now = t0;
    for round in 1..=3u32 {
        let mut e = None;
        for _ in 0..3 {
            e = d.on_result(&0, Outcome::Status(500), now);
        }
        let e = e.expect("ejected");
        assert_eq!(e.count, round);
        assert!(e.duration <= Duration::from_secs(300));
        now += e.duration;
        d.tick(now);
    }
    assert_eq!(d.ejection_multiplier(&0), 3);
    // Healthy sweeps decay it.
    for i in 1..=3u64 {
        d.tick(now + Duration::from_secs(i));
    }
    assert_eq!(d.ejection_multiplier(&0), 0);
}

#[test]
fn gateway_errors_count_only_502_to_504() {
    let t0 = Instant::now();
    let c = OutlierConfig {
        consecutive_5xx: 0,
        consecutive_gateway: 2,
        ..cfg()
    };
    let mut d = det(2, c);
    assert_eq!(d.on_result(&0, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(503), t0), None);
    let e = d.on_result(&0, Outcome::Status(504), t0);
    assert_eq!(e.map(|e| e.reason), Some(EjectReason::ConsecutiveGateway));
}

#[test]
fn local_origin_unsplit_counts_as_5xx() {
    let t0 = Instant::now();
    let mut d = det(2, cfg());
    d.on_result(&0, Outcome::ConnectFailed, t0);
    d.on_result(&0, Outcome::Reset, t0);
    let e = d.on_result(&0, Outcome::Timeout, t0);
    assert_eq!(e.map(|e| e.reason), Some(EjectReason::Consecutive5xx));
}

#[test]
fn local_origin_split_uses_its_own_counter() {
    let t0 = Instant::now();
    let c = OutlierConfig {
        split_local_origin: true,
        consecutive_local_origin: 2,
        ..cfg()
    };
    let mut d = det(2, c);
    // 5xx and local failures interleaved do not reset each other.
    assert_eq!(d.on_result(&0, Outcome::ConnectFailed, t0), None);
    assert_eq!(d.on_result(&0, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&0, Outcome::Connected, t0), None);
    assert_eq!(d.on_result(&0, Outcome::ConnectFailed, t0), None);
    let e = d.on_result(&0, Outcome::ConnectFailed, t0);
    assert_eq!(
        e.map(|e| e.reason),
        Some(EjectReason::ConsecutiveLocalOrigin)
    );
    assert_eq!(d.on_result(&1, Outcome::Status(500), t0), None);
    assert_eq!(d.on_result(&1, Outcome::Status(500), t0), None);
    let e = d.on_result(&1, Outcome::Status(500), t0);
    assert_eq!(e.map(|e| e.reason), Some(EjectReason::Consecutive5xx));
}

#[test]
fn max_ejection_percent_caps_but_allows_one() {
    let t0 = Instant::now();
    let c = OutlierConfig {
        max_ejection_percent: 10,
        ..cfg()
    };
    let mut d = det(3, c);
    for k in 0..3 {
        for _ in 0..3 {
            d.on_result(&k, Outcome::Status(500), t0);
        }
    }
    assert_eq!(d.ejected_count(t0), 1);
    assert_eq!(d.stats().ejections_overflow, 2);

    let c = OutlierConfig {
        max_ejection_percent: 50,
        ..cfg()
    };
    let mut d = det(4, c);
    for k in 0..4 {
        for _ in 0..3 {
            d.on_result(&k, Outcome::Status(500), t0);
        }
    }
    assert_eq!(d.ejected_count(t0), 2);
}

#[test]
fn state_survives_endpoint_updates() {
    let t0 = Instant::now();
    let mut d = det(3, cfg());
    for _ in 0..3 {
        d.on_result(&2, Outcome::Status(500), t0);
    }
    d.on_result(&1, Outcome::Status(500), t0);
    d.on_result(&1, Outcome::Status(500), t0);
    d.update_endpoints(&[1, 2, 7]);
    assert!(d.is_ejected(&2, t0));
    // Endpoint 1 keeps its two failures: one more ejects it.
    assert!(d.on_result(&1, Outcome::Status(500), t0).is_some());
    // Removed endpoints are forgotten; unknown keys are ignored.
    d.update_endpoints(&[7]);
    assert!(!d.is_ejected(&2, t0));
    d.update_endpoints(&[2, 7]);
    assert!(!d.is_ejected(&2, t0));
    assert_eq!(d.on_result(&99, Outcome::Status(500), t0), None);
}

#[test]
fn from_istio_defaults_and_mapping() {
    let od = OutlierDetection {
        consecutive_errors: Some(7),
        ..Default::default()
    };
    let c = OutlierConfig::from_istio(&od);
    assert_eq!(c.consecutive_5xx, 5);
    assert_eq!(c.consecutive_gateway, 7);
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.base_ejection_time, Duration::from_secs(30));
    assert_eq!(c.max_ejection_percent, 10);
    assert_eq!(c.panic_threshold_percent(), 0);
    let od = OutlierDetection {
        consecutive_5xx_errors: Some(0),
        min_health_percent: Some(30),
        ..Default::default()
    };
    let c = OutlierConfig::from_istio(&od);
    assert_eq!(c.consecutive_5xx, 0);
    assert_eq!(c.panic_threshold_percent(), 30);
}

#[test]
fn lazy_sweep_runs_on_results() {
    let t0 = Instant::now();
    let mut d = det(2, cfg());
    d.on_result(&0, Outcome::Status(200), t0);
    for _ in 0..3 {
        d.on_result(&0, Outcome::Status(500), t0);
    }
    let later = t0 + Duration::from_secs(11);
    d.on_result(&1, Outcome::Status(200), later);
    assert!(!d.is_ejected(&0, later));
    assert_eq!(d.ejected_count(later), 0);
}

#[test]
fn grpc_statuses_map_like_envoy() {
    assert_eq!(grpc_to_http_status(0), 200);
    assert_eq!(grpc_to_http_status(14), 503);
    assert_eq!(grpc_to_http_status(13), 500);
    assert_eq!(grpc_to_http_status(4), 504);
    assert_eq!(grpc_to_http_status(5), 404);
    assert_eq!(grpc_to_http_status(99), 500);
}
