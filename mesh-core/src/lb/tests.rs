use std::collections::BTreeMap;

use proptest::prelude::*;

use std::time::Duration;

use super::*;
use crate::config::networking::destination_rule::{
    Distribute, Failover, LoadBalancerSettings, OutlierDetection,
};

fn ep(i: u32, weight: u32, loc: &str) -> LbEndpoint<u32> {
    LbEndpoint {
        key: i,
        name: format!("10.0.0.{i}:80"),
        weight,
        locality: Locality::parse(loc),
        labels: Labels::new(),
    }
}

fn eps(n: u32) -> Vec<LbEndpoint<u32>> {
    (0..n).map(|i| ep(i, 1, "")).collect()
}

fn cfg(algorithm: Algorithm) -> LbConfig {
    LbConfig {
        algorithm,
        ..LbConfig::default()
    }
}

fn healthy(_: usize) -> HostView {
    HostView {
        healthy: true,
        ..HostView::default()
    }
}

fn counts(b: &mut Balancer<u32>, n: usize, view: &dyn Fn(usize) -> HostView) -> Vec<usize> {
    let now = Instant::now();
    let mut rng = SplitMix64(42);
    let mut c = vec![0; b.endpoints().len()];
    for _ in 0..n {
        let p = b.pick(now, &mut rng, None, view).expect("picked");
        c[p.index] += 1;
    }
    c
}

#[test]
fn round_robin_respects_weights_exactly() {
    let e = vec![ep(0, 1, ""), ep(1, 2, ""), ep(2, 3, "")];
    let mut b = Balancer::new(cfg(Algorithm::RoundRobin), ClientInfo::default(), e);
    assert_eq!(counts(&mut b, 600, &healthy), vec![100, 200, 300]);
    let mut b = Balancer::new(cfg(Algorithm::RoundRobin), ClientInfo::default(), eps(3));
    let now = Instant::now();
    let mut rng = SplitMix64(1);
    let seq: Vec<usize> = (0..6)
        .map(|_| {
            b.pick(now, &mut rng, None, &healthy)
                .map(|p| p.index)
                .unwrap_or(9)
        })
        .collect();
    assert_eq!(seq[..3], seq[3..]);
    let mut first = seq[..3].to_vec();
    first.sort();
    assert_eq!(first, vec![0, 1, 2]);
}

#[test]
fn random_respects_weights() {
    let e = vec![ep(0, 1, ""), ep(1, 3, "")];
    let mut b = Balancer::new(cfg(Algorithm::Random), ClientInfo::default(), e);
    let c = counts(&mut b, 8000, &healthy);
    assert!((1700..2300).contains(&c[0]), "{c:?}");
}

#[test]
fn least_request_prefers_less_loaded() {
    let mut b = Balancer::new(cfg(Algorithm::LeastRequest), ClientInfo::default(), eps(3));
    let view = |i: usize| HostView {
        healthy: true,
        active: if i == 0 { 50 } else { 1 },
        tried: false,
    };
    let c = counts(&mut b, 3000, &view);
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[1] > 1000 && c[2] > 1000, "{c:?}");
    // Equal load spreads evenly.
    let c = counts(&mut b, 3000, &healthy);
    assert!(c.iter().all(|x| (800..1200).contains(x)), "{c:?}");
}

#[test]
fn unhealthy_endpoints_get_nothing() {
    for alg in [
        Algorithm::RoundRobin,
        Algorithm::LeastRequest,
        Algorithm::Random,
        Algorithm::RingHash {
            min_ring_size: 1024,
        },
        Algorithm::Maglev { table_size: 65537 },
    ] {
        let mut c = cfg(alg);
        c.panic_threshold = 0;
        let mut b = Balancer::new(c, ClientInfo::default(), eps(3));
        let view = |i: usize| HostView {
            healthy: i != 1,
            ..HostView::default()
        };
        let got = counts(&mut b, 300, &view);
        assert_eq!(got[1], 0, "{alg:?} {got:?}");
        let none = b.pick(Instant::now(), &mut SplitMix64(3), None, &|_| {
            HostView::default()
        });
        assert_eq!(none, None, "{alg:?}");
    }
}

#[test]
fn panic_mode_uses_every_endpoint_below_threshold() {
    let mut b = Balancer::new(cfg(Algorithm::RoundRobin), ClientInfo::default(), eps(3));
    // 1 of 3 healthy: 140 * 1 / 3 = 46% < 50%: panic.
    let view = |i: usize| HostView {
        healthy: i == 0,
        ..HostView::default()
    };
    let p = b.pick(Instant::now(), &mut SplitMix64(1), None, &view);
    assert!(p.is_some_and(|p| p.panic));
    assert_eq!(counts(&mut b, 300, &view), vec![100, 100, 100]);
    // 2 of 3 healthy: 93% >= 50%: no panic.
    let view = |i: usize| HostView {
        healthy: i != 2,
        ..HostView::default()
    };
    assert_eq!(counts(&mut b, 300, &view)[2], 0);
    // Nothing healthy still serves in panic mode.
    assert!(b
        .pick(Instant::now(), &mut SplitMix64(1), None, &|_| {
            HostView::default()
        })
        .is_some());
}

fn client(loc: &str) -> ClientInfo {
    ClientInfo {
        locality: Locality::parse(loc),
        labels: Labels::new(),
    }
}

fn prio_cfg() -> LbConfig {
    LbConfig {
        algorithm: Algorithm::RoundRobin,
        priorities: true,
        panic_threshold: 0,
        ..LbConfig::default()
    }
}

#[test]
fn locality_priorities_and_failover() {
    let e = vec![
        ep(0, 1, "us-west/zone2/a"),
        ep(1, 1, "us-east/zone1/b"),
        ep(2, 1, "us-east/zone1/a"),
        ep(3, 1, "us-east/zone2/a"),
    ];
    let mut b = Balancer::new(prio_cfg(), client("us-east/zone1/a"), e);
    assert_eq!(b.priorities(), &[3, 1, 0, 2]);
    assert_eq!(counts(&mut b, 100, &healthy), vec![0, 0, 100, 0]);
    let down = |set: &'static [usize]| {
        move |i: usize| HostView {
            healthy: !set.contains(&i),
            ..HostView::default()
        }
    };
    assert_eq!(counts(&mut b, 100, &down(&[2])), vec![0, 100, 0, 0]);
    assert_eq!(counts(&mut b, 100, &down(&[1, 2])), vec![0, 0, 0, 100]);
    assert_eq!(counts(&mut b, 100, &down(&[1, 2, 3])), vec![100, 0, 0, 0]);
}

#[test]
fn failover_region_order() {
    let e = vec![ep(0, 1, "r2/z/s"), ep(1, 1, "r3/z/s"), ep(2, 1, "r1/z/s")];
    let mut c = prio_cfg();
    c.failover = vec![Failover {
        from: "r1".into(),
        to: "r3".into(),
    }];
    let mut b = Balancer::new(c, client("r1/z/s"), e);
    let down2 = |i: usize| HostView {
        healthy: i != 2,
        ..HostView::default()
    };
    assert_eq!(counts(&mut b, 100, &down2), vec![0, 100, 0]);
}

#[test]
fn failover_priority_labels() {
    let mut e = vec![ep(0, 1, ""), ep(1, 1, ""), ep(2, 1, "")];
    let lab = |a: &str, b: &str| {
        BTreeMap::from([
            ("net".to_string(), a.to_string()),
            ("rack".to_string(), b.to_string()),
        ])
    };
    e[0].labels = lab("n1", "r9");
    e[1].labels = lab("n2", "r1");
    e[2].labels = lab("n1", "r1");
    let mut c = prio_cfg();
    c.failover_priority = vec!["net".into(), "rack".into()];
    let cl = ClientInfo {
        locality: Locality::default(),
        labels: lab("n1", "r1"),
    };
    let b = Balancer::new(c.clone(), cl.clone(), e.clone());
    assert_eq!(b.priorities(), &[1, 2, 0]);
    c.failover_priority = vec!["net=n2".into()];
    let b = Balancer::new(c, cl, e);
    assert_eq!(b.priorities(), &[1, 0, 1]);
}

#[test]
fn overprovisioning_spills_over_gradually() {
    // Priority 0 has 4 endpoints, 2 healthy: 140 * 2/4 = 70% stays.
    let e = vec![
        ep(0, 1, "a/z/s"),
        ep(1, 1, "a/z/s"),
        ep(2, 1, "a/z/s"),
        ep(3, 1, "a/z/s"),
        ep(4, 1, "b/z/s"),
    ];
    let mut c = prio_cfg();
    c.algorithm = Algorithm::Random;
    let mut b = Balancer::new(c, client("a/z/s"), e);
    let view = |i: usize| HostView {
        healthy: i >= 2,
        ..HostView::default()
    };
    let got = counts(&mut b, 10_000, &view);
    let p0 = got[2] + got[3];
    assert!((6700..7300).contains(&p0), "{got:?}");
    // 3 of 4 healthy: 105% -> everything stays.
    let view = |i: usize| HostView {
        healthy: i >= 1,
        ..HostView::default()
    };
    assert_eq!(counts(&mut b, 1000, &view)[4], 0);
}

#[test]
fn distribute_weights_localities() {
    let e = vec![
        ep(0, 1, "r/z1/s"),
        ep(1, 1, "r/z2/s"),
        ep(2, 1, "r/z2/t"),
        ep(3, 1, "x/y/z"),
    ];
    let mut c = cfg(Algorithm::Random);
    c.distribute = vec![Distribute {
        from: "r/z1/*".into(),
        to: BTreeMap::from([("r/z1/*".to_string(), 80), ("r/z2/*".to_string(), 20)]),
    }];
    let mut b = Balancer::new(c, client("r/z1/s"), e);
    let got = counts(&mut b, 10_000, &healthy);
    assert!((7700..8300).contains(&got[0]), "{got:?}");
    assert_eq!(got[3], 0);
}

#[test]
fn warmup_ramps_new_endpoints() {
    let mut c = cfg(Algorithm::RoundRobin);
    c.warmup = Some(Warmup {
        duration: Duration::from_secs(100),
        min_percent: 10.0,
        aggression: 1.0,
    });
    let t0 = Instant::now();
    let mut b = Balancer::new(c.clone(), ClientInfo::default(), eps(1));
    b.update(c, ClientInfo::default(), eps(2), t0);
    let share = |b: &mut Balancer<u32>, at: Instant| {
        let mut rng = SplitMix64(5);
        let mut n = 0;
        for _ in 0..1000 {
            if b.pick(at, &mut rng, None, &healthy).map(|p| p.index) == Some(1) {
                n += 1;
            }
        }
        n
    };
    let s0 = share(&mut b, t0);
    let s50 = share(&mut b, t0 + Duration::from_secs(50));
    let s100 = share(&mut b, t0 + Duration::from_secs(100));
    // weight factors 0.1, 0.5, 1.0 against 1.0.
    assert!((80..100).contains(&s0), "{s0}");
    assert!((320..350).contains(&s50), "{s50}");
    assert_eq!(s100, 500);
    let w = Warmup {
        duration: Duration::from_secs(100),
        min_percent: 0.0,
        aggression: 2.0,
    };
    assert!((w.factor(Duration::from_secs(25)) - 0.5).abs() < 1e-9);
}

#[test]
fn retries_avoid_tried_endpoints() {
    for alg in [
        Algorithm::RoundRobin,
        Algorithm::LeastRequest,
        Algorithm::RingHash { min_ring_size: 64 },
        Algorithm::Maglev { table_size: 101 },
    ] {
        let mut b = Balancer::new(cfg(alg), ClientInfo::default(), eps(2));
        let first = b
            .pick(Instant::now(), &mut SplitMix64(9), Some(77), &healthy)
            .map(|p| p.index);
        let Some(first) = first else {
            panic!("no pick")
        };
        let view = |i: usize| HostView {
            healthy: true,
            active: 0,
            tried: i == first,
        };
        for s in 0..20 {
            let p = b.pick(Instant::now(), &mut SplitMix64(s), Some(77), &view);
            assert_eq!(p.map(|p| p.index), Some(1 - first), "{alg:?}");
        }
        // All tried: still serves.
        let all = |_| HostView {
            healthy: true,
            active: 0,
            tried: true,
        };
        assert!(b
            .pick(Instant::now(), &mut SplitMix64(1), Some(77), &all)
            .is_some());
    }
}

fn owners(alg: Algorithm, n: u32, skip: Option<u32>, keys: u64) -> Vec<u32> {
    let e: Vec<_> = (0..n)
        .filter(|i| Some(*i) != skip)
        .map(|i| ep(i, 1, ""))
        .collect();
    let mut b = Balancer::new(cfg(alg), ClientInfo::default(), e);
    let mut rng = SplitMix64(0);
    (0..keys)
        .map(|k| {
            let h = hash_key::hash_key(format!("user-{k}").as_bytes());
            let p = b.pick(Instant::now(), &mut rng, Some(h), &healthy);
            p.map(|p| b.endpoints()[p.index].key).unwrap_or(u32::MAX)
        })
        .collect()
}

fn check_minimal_disruption(alg: Algorithm) {
    let keys = 6000;
    let before = owners(alg, 4, None, keys);
    let again = owners(alg, 4, None, keys);
    assert_eq!(before, again, "sticky");
    let after = owners(alg, 4, Some(2), keys);
    let mut moved_other = 0;
    let mut on_removed = 0;
    for (a, b) in before.iter().zip(&after) {
        if *a == 2 {
            on_removed += 1;
        } else if a != b {
            moved_other += 1;
        }
    }
    // About 1/4 of the keys lived on the removed endpoint.
    assert!((1100..1900).contains(&on_removed), "{alg:?} {on_removed}");
    // Keys elsewhere (almost) never move.
    assert!(
        moved_other * 100 < keys as usize * 3,
        "{alg:?} {moved_other}"
    );
}

#[test]
fn ring_hash_is_sticky_with_minimal_disruption() {
    check_minimal_disruption(Algorithm::RingHash {
        min_ring_size: 1024,
    });
}

#[test]
fn maglev_is_sticky_with_minimal_disruption() {
    check_minimal_disruption(Algorithm::Maglev { table_size: 65537 });
}

#[test]
fn hash_tables_respect_weights() {
    for alg in [
        Algorithm::RingHash {
            min_ring_size: 4096,
        },
        Algorithm::Maglev { table_size: 65537 },
    ] {
        let e = vec![ep(0, 1, ""), ep(1, 3, "")];
        let mut b = Balancer::new(cfg(alg), ClientInfo::default(), e);
        let mut rng = SplitMix64(0);
        let mut n1 = 0;
        for k in 0..8000u64 {
            let h = hash_key::hash_key(&k.to_le_bytes());
            if b.pick(Instant::now(), &mut rng, Some(h), &healthy)
                .map(|p| p.index)
                == Some(1)
            {
                n1 += 1;
            }
        }
        assert!((5600..6400).contains(&n1), "{alg:?} {n1}");
    }
}

#[test]
fn from_istio_mapping() {
    let c = LbConfig::from_istio(None, None);
    assert_eq!(c.algorithm, Algorithm::LeastRequest);
    assert!(!c.priorities);
    assert_eq!(c.panic_threshold, 50);
    let od = OutlierDetection::default();
    let c = LbConfig::from_istio(None, Some(&od));
    assert!(c.priorities);
    assert_eq!(c.panic_threshold, 0);
    let lb: LoadBalancerSettings = serde_json::from_value(serde_json::json!({
        "consistentHash": {"httpHeaderName": "x-user", "maglev": {"tableSize": 101}},
        "warmup": {"duration": "30s"}
    }))
    .expect("lb");
    let c = LbConfig::from_istio(Some(&lb), None);
    assert_eq!(c.algorithm, Algorithm::Maglev { table_size: 101 });
    assert_eq!(c.warmup.map(|w| w.min_percent), Some(10.0));
    let lb: LoadBalancerSettings = serde_json::from_value(serde_json::json!({
        "simple": "ROUND_ROBIN",
        "localityLbSetting": {"enabled": false}
    }))
    .expect("lb");
    let c = LbConfig::from_istio(Some(&lb), Some(&od));
    assert_eq!(c.algorithm, Algorithm::RoundRobin);
    assert!(!c.priorities);
}

#[test]
fn cookie_and_query_helpers() {
    assert_eq!(
        hash_key::find_cookie("a=1; sid=\"xyz\"; b=2", "sid"),
        Some("xyz")
    );
    assert_eq!(hash_key::find_cookie("a=1", "sid"), None);
    assert_eq!(
        hash_key::find_query_param("x=1&user=bob", "user"),
        Some("bob")
    );
    let (v, set) =
        hash_key::generate_cookie("sid", b"1.2.3.4:5", Some("/"), Duration::from_secs(60), &[]);
    assert_eq!(v.len(), 16);
    assert_eq!(set, format!("sid=\"{v}\"; Max-Age=60; Path=/; HttpOnly"));
}

#[test]
fn locality_patterns() {
    let l = Locality::parse("us/z1/s1");
    assert!(l.matches("us"));
    assert!(l.matches("us/*"));
    assert!(l.matches("us/z1/*"));
    assert!(l.matches("*"));
    assert!(!l.matches("us/z2/*"));
    assert!(!l.matches("eu"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ring_lookup_is_deterministic_and_valid(keys in proptest::collection::vec(any::<u64>(), 1..50), n in 1u32..8) {
        let hosts: Vec<(usize, String, u32)> = (0..n as usize).map(|i| (i, format!("h{i}"), 1 + i as u32)).collect();
        let r1 = ring::Ring::build(&hosts, 64);
        let r2 = ring::Ring::build(&hosts, 64);
        let m = maglev::Maglev::build(&hosts, 251);
        prop_assert_eq!(m.len(), 251);
        for k in keys {
            let a = r1.lookup(k, &|_| true);
            prop_assert_eq!(a, r2.lookup(k, &|_| true));
            prop_assert!(a.is_some_and(|i| i < n as usize));
            prop_assert!(m.lookup(k, &|_| true).is_some_and(|i| i < n as usize));
        }
    }

    #[test]
    fn picks_are_always_healthy_when_any_is(mask in 1u8..255, seed in any::<u64>()) {
        let mut c = cfg(Algorithm::LeastRequest);
        c.panic_threshold = 0;
        let mut b = Balancer::new(c, ClientInfo::default(), eps(8));
        let view = |i: usize| HostView { healthy: mask & (1 << i) != 0, ..HostView::default() };
        let p = b.pick(Instant::now(), &mut SplitMix64(seed), None, &view);
        prop_assert!(p.is_some_and(|p| mask & (1 << p.index) != 0));
    }
}

/// A view that says every endpoint is healthy and untried (when `fast`),
/// with `active[i]` requests in flight, counting how often it is asked.
struct Counted {
    active: Vec<u32>,
    fast: bool,
    asked: std::cell::Cell<usize>,
}

impl Hosts for Counted {
    fn view(&self, i: usize) -> HostView {
        self.asked.set(self.asked.get() + 1);
        HostView {
            healthy: true,
            active: self.active[i],
            tried: false,
        }
    }

    fn all_healthy_untried(&self) -> bool {
        self.fast
    }
}

fn pick_counts(b: &mut Balancer<u32>, hosts: &Counted, picks: usize) -> Vec<usize> {
    let now = Instant::now();
    let mut rng = SplitMix64(7);
    let mut c = vec![0; b.endpoints().len()];
    for _ in 0..picks {
        let p = b.pick_hosts(now, &mut rng, None, hosts).expect("picked");
        c[p.index] += 1;
    }
    c
}

#[test]
fn all_healthy_pick_looks_at_two_endpoints_not_all() {
    let n = 1000;
    let hosts = Counted {
        active: vec![0; n],
        fast: true,
        asked: Default::default(),
    };
    let mut b = Balancer::new(LbConfig::default(), ClientInfo::default(), eps(n as u32));
    pick_counts(&mut b, &hosts, 100);
    assert!(
        hosts.asked.get() <= 200,
        "asked {} times",
        hosts.asked.get()
    );
    // Without the hint every endpoint is looked at on every pick.
    let slow = Counted {
        fast: false,
        ..hosts
    };
    slow.asked.set(0);
    pick_counts(&mut b, &slow, 10);
    assert_eq!(slow.asked.get(), 10 * n);
}

#[test]
fn all_healthy_pick_is_still_power_of_two_choices() {
    // Endpoint i has 10*i requests in flight. With two distinct uniform
    // draws, the busiest never wins and the idlest wins whenever drawn:
    // 1 - C(9,2)/C(10,2) = 20% of picks. Fast and general paths agree.
    let active: Vec<u32> = (0..10).map(|i| i * 10).collect();
    for fast in [true, false] {
        let hosts = Counted {
            active: active.clone(),
            fast,
            asked: Default::default(),
        };
        let mut b = Balancer::new(LbConfig::default(), ClientInfo::default(), eps(10));
        let c = pick_counts(&mut b, &hosts, 20_000);
        assert_eq!(c[9], 0, "fast={fast}: {c:?}");
        let idlest = c[0] as f64 / 20_000.0;
        assert!((idlest - 0.2).abs() < 0.02, "fast={fast}: {idlest} {c:?}");
    }
}

#[test]
fn all_healthy_hint_is_ignored_when_weights_differ_or_warm_up() {
    let hosts = Counted {
        active: vec![0; 3],
        fast: true,
        asked: Default::default(),
    };
    // Unequal weights: the general pick, which honours them.
    let e = vec![ep(0, 1, ""), ep(1, 1, ""), ep(2, 8, "")];
    let mut b = Balancer::new(cfg(Algorithm::Random), ClientInfo::default(), e);
    let c = pick_counts(&mut b, &hosts, 10_000);
    assert!(c[2] > 7_000, "{c:?}");
    // A new endpoint warming up: the general pick, which ramps it.
    let mut lbc = cfg(Algorithm::Random);
    lbc.warmup = Some(Warmup {
        duration: Duration::from_secs(60),
        min_percent: 10.0,
        aggression: 1.0,
    });
    let mut b = Balancer::new(lbc.clone(), ClientInfo::default(), eps(2));
    b.update(lbc, ClientInfo::default(), eps(3), Instant::now());
    let c = pick_counts(&mut b, &hosts, 10_000);
    assert!(c[2] < 1_000, "the new endpoint starts near 10%: {c:?}");
}
