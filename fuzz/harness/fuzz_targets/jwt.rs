//! libFuzzer entry of the `jwt` target (see `mesh_fuzz::jwt`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::jwt(data));
