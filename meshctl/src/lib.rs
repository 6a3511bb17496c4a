//! `meshctl` as a library: what other crates (and the interop tests) need
//! from the CLI without running the binary, chiefly the proxyless gRPC
//! bootstrap builder, so a test gets exactly what `meshctl bootstrap grpc`
//! prints for the same flags, the authorization explanation
//! `meshctl x authz` prints, and the Kubernetes manifests
//! `meshctl install` prints.
#![forbid(unsafe_code)]

pub mod authz;
pub mod bootstrap;
pub mod common;
pub mod install;
