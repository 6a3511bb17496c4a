//! `meshctl` as a library: what other crates (and the interop tests) need
//! from the CLI without running the binary, chiefly the proxyless gRPC
//! bootstrap builder, so a test gets exactly what `meshctl bootstrap grpc`
//! prints for the same flags.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod common;
