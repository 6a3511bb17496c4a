//! Canary rollout: shift traffic from reviews v1 to v2 by editing YAML while
//! requests flow, with no restart and no failed request.
//!
//! Two real backends run on loopback. The mesh config (a Service, two
//! WorkloadEntries, a DestinationRule with subsets and a VirtualService with
//! a 90/10 split) lives in a directory the SDK watches. Halfway through, the
//! example rewrites the split to 50/50; the next requests follow it.
//!
//! Run: `cargo run -p mesh-examples --example canary`

#[tokio::main]
async fn main() -> Result<(), mesh_examples::Error> {
    let r = mesh_examples::canary::run().await?;
    println!("90/10 split: v1 {}, v2 {} of 1000", r.before.0, r.before.1);
    println!(
        "during the edit: v1 {}, v2 {} of 500, 0 failed",
        r.during.0, r.during.1
    );
    println!("50/50 split: v1 {}, v2 {} of 1000", r.after.0, r.after.1);
    Ok(())
}
