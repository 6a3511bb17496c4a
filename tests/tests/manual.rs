//! Not run by default: keeps the client scenario up for two minutes so a
//! stock client can be pointed at it by hand while debugging, e.g.
//! `cargo test -p mesh-interop --test manual -- --ignored --nocapture`, then
//! `GRPC_XDS_BOOTSTRAP=<printed path> python3 tests/interop/python/client.py
//! --target xds:///echo.interop.test:7070 --count 10`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_interop::scenario::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "manual debugging aid; runs for two minutes"]
async fn serve_scenario_for_manual_runs() {
    let s = Scenario::start().await.unwrap();
    println!("GRPC_XDS_BOOTSTRAP={}", s.bootstrap.display());
    println!("xDS on {}", s.control.xds_addr());
    tokio::time::sleep(Duration::from_secs(120)).await;
}
