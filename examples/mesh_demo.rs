//! The whole mesh on loopback: `meshd` (the bundled control plane) serves
//! Istio YAML over Envoy v3 xDS; a workload using the SDK in mesh mode
//! (`Mesh::xds`) routes to two real backends by what meshd sends it; an
//! edit of the YAML shifts 90/10 to 50/50 under traffic with no failure.
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
        println!("  workload ACKed {t} version {v}");
    }
    Ok(())
}
