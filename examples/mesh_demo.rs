//! The whole mesh on loopback: `meshd` (the bundled control plane) serves
//! Istio YAML over Envoy v3 xDS; three workloads using the SDK in mesh mode
//! (`Mesh::xds`), productpage calling reviews v1/v2 over mesh mTLS, route
//! by what meshd sends them; an edit of the YAML shifts 90/10 to 50/50
//! under traffic with no failure; then v2 goes bad, and each workload's
//! Istio metrics (served at `/stats/prometheus`) tell the story.
//!
//! Run: `cargo run -p mesh-examples --example mesh_demo`

#[tokio::main]
async fn main() -> Result<(), mesh_examples::Error> {
    let r = mesh_examples::mesh_demo::run().await?;
    println!("meshd serving xDS at {}", r.xds_addr);
    println!(
        "90/10 split via xDS: v1 {}, v2 {} of 1000",
        r.before.0, r.before.1
    );
    println!(
        "during the YAML edit: v1 {}, v2 {} of 500, 0 failed",
        r.during.0, r.during.1
    );
    println!(
        "50/50 split after meshd's push: v1 {}, v2 {} of 1000",
        r.after.0, r.after.1
    );
    println!(
        "meshd config generation {} -> {}",
        r.generations.0, r.generations.1
    );
    for (t, v) in &r.acked {
        println!("  productpage ACKed {t} version {v}");
    }
    let answers: Vec<String> = r
        .degraded
        .iter()
        .map(|((body, status), n)| format!("{body} {status}: {n}"))
        .collect();
    println!(
        "v2 failing one request in {}: {} of 200",
        mesh_examples::mesh_demo::Faults::EVERY,
        answers.join(", ")
    );
    println!("telemetry (istio_requests_total from each workload's /stats/prometheus):");
    for e in &r.telemetry {
        println!(
            "  {} -> {} {}: {} reported by source, {} by destination ({})",
            e.source, e.destination, e.code, e.by_source, e.by_destination, e.security
        );
    }
    for (name, addr) in &r.metrics {
        println!("  {name} served http://{addr}/stats/prometheus");
    }
    Ok(())
}
