//! Resilience: one of three backends fails every request, and retries plus
//! outlier detection keep the success rate above 99.9%.
//!
//! The DestinationRule ejects an endpoint after consecutive 5xx errors; the
//! VirtualService retries 5xx on another endpoint. Before the bad endpoint
//! is ejected, retries mask its failures; after, it gets no traffic at all.
//!
//! Run: `cargo run -p mesh-examples --example resilience`

#[tokio::main]
async fn main() -> Result<(), mesh_examples::Error> {
    let r = mesh_examples::resilience::run(3000).await?;
    println!(
        "{}/{} succeeded ({:.2}%); the failing backend saw {} requests, the healthy ones {} and {}",
        r.ok,
        r.total,
        r.success_rate(),
        r.bad_served,
        r.good_served.0,
        r.good_served.1
    );
    if r.success_rate() < 99.9 {
        return Err(format!("success rate {:.2}% is below 99.9%", r.success_rate()).into());
    }
    Ok(())
}
