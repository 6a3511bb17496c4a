//! libFuzzer entry of the `path` target (see `mesh_fuzz::path`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::path(data));
