//! Compiles `proto/istio/v1/auth/ca.proto` with the pure-Rust `protox`
//! compiler (no system `protoc` needed) and generates prost messages plus the
//! tonic client and server for `istio.v1.auth.IstioCertificateService`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only the `grpc` feature has the service (and these build deps).
    #[cfg(feature = "grpc")]
    compile()?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn compile() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/istio/v1/auth/ca.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
