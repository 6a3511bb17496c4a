//! Apps not written in Rust in the mesh: Python `http.server` apps behind
//! `mesh-shim`, a Python client through its shim, a Rust SDK workload
//! beside them, meshd over TLS with its CA, and `mesh-shim gateway`
//! serving HTTPS. See `mesh_examples::legacy` for the steps.
//!
//! Run: `cargo build -p sidecar-shim && cargo run -p mesh-examples --example legacy_demo`

#[tokio::main]
async fn main() -> Result<(), mesh_examples::Error> {
    let r = mesh_examples::legacy::run().await?;
    println!(
        "Python ratings v1/v2/v3 behind mesh-shim, certificates and config from meshd's TLS port"
    );
    println!(
        "90/10 canary from the Rust SDK workload: {:?} of 200",
        r.canary
    );
    println!(
        "YAML edited to 50/50 under traffic: {:?} of 300, {} failed",
        r.during_edit.0, r.during_edit.1
    );
    println!("after the push: {:?} of 200", r.after);
    println!(
        "all to v3, which fails every other request: {} of {} succeeded (retries: 3 on 5xx); v3's shim saw {} answers 503",
        r.retried.0, r.retried.1, r.retried.2
    );
    println!(
        "Python client through its shim (HTTP_PROXY): GET -> {}, POST -> {} (AuthorizationPolicy allows GET only)",
        r.python_client.0, r.python_client.1
    );
    println!(
        "curl https://ratings.example.com through mesh-shim gateway: {}",
        r.gateway
    );
    Ok(())
}
