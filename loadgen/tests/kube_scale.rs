//! The Kubernetes scale bench (`benches/kube_scale/`) end to end at a tiny
//! size: a real kube-apiserver populated with 20 Services, 40
//! EndpointSlices and 90 Pods, the debug meshd that `cargo test
//! --workspace` builds started on it and then on the same objects as
//! files, 12 clients configured, two EndpointSlice changes ACKed by every
//! affected client. Only that the measurement completes and its numbers
//! are sane is checked; speed is reported by the bench, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/kube_scale/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::time::Duration;

use mesh_loadgen::kube::Layout;

#[test]
fn the_scale_bench_measures_kubernetes_and_files_at_a_tiny_size() {
    let meshd = driver::meshd_beside_exe().unwrap();
    let layout = Layout {
        services: 20,
        slices_per_service: 2,
        endpoints_per_slice: 2,
        // 80 endpoints, each with its Pod, and 10 Pods in no Service.
        pods: 90,
        namespaces: 3,
        istio_every: 4,
    };
    let options = driver::Options {
        layout,
        clients: 12,
        targets: 3,
        connections: 2,
        changes: 2,
        concurrency: 16,
        files_baseline: true,
        meshd,
        meshd_env: Vec::new(),
        timeout: Duration::from_secs(30),
        settle: Duration::from_millis(300),
        keep_logs: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(driver::run(options)).unwrap();
    let table = report.table();
    eprintln!("{table}");
    // Namespaces (istio-system + 3), Services, slices, Pods, 5 DR + 5 VS.
    assert_eq!(report.objects, 4 + 20 + 40 + 90 + 10, "{table}");
    let files = report.files.as_ref().expect("the files baseline ran");
    for r in [&report.kube, files] {
        assert!(r.complete(), "{}: not complete:\n{table}", r.source);
        assert_eq!(
            r.initial.ended, 0,
            "{}: {:?}",
            r.source, r.initial.first_end
        );
        assert!(r.ready > Duration::ZERO, "{table}");
        assert!(r.rss_synced_kib.is_some_and(|k| k > 1024), "{table}");
        assert!(r.rss_clients_kib.is_some_and(|k| k > 1024), "{table}");
        // 12 clients x 3 Services: one listener and route config each, and
        // an EDS cluster per cluster (Services 0, 4, 8, ... split over two
        // subsets).
        let [l, rds, c, e] = r.resources;
        assert_eq!((l, rds), (36, 36), "{}: {table}", r.source);
        assert!(
            c >= 36 && e == c,
            "{}: clusters {c}, endpoint sets {e}",
            r.source
        );
        assert_eq!(r.changes.len(), 2, "{table}");
        for (i, c) in &r.changes {
            assert!(c.progress.of > 0, "svc-{i} has affected clients");
            assert!(
                c.changed >= c.progress.of,
                "{}: svc-{i}: every affected client saw the endpoints change",
                r.source
            );
            assert!(c.cpu_s.is_some_and(|s| s >= 0.0), "{table}");
        }
    }
    let json = report.json();
    assert_eq!(json["kubernetes"]["complete"], true, "{json}");
    assert_eq!(
        json["files"]["change_ms"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
    assert!(
        table.contains("| kubernetes |") && table.contains("| files |"),
        "{table}"
    );
}
