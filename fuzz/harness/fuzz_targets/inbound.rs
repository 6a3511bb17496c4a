//! libFuzzer entry of the `inbound` target (see `mesh_fuzz::inbound`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::inbound(data));
