//! libFuzzer entry of the `xds` target (see `mesh_fuzz::xds`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::xds(data));
