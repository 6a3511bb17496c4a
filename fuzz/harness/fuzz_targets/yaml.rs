//! libFuzzer entry of the `yaml` target (see `mesh_fuzz::yaml`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::yaml(data));
