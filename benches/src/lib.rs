//! Shared fixtures for the benchmarks in `benches/benches/`: each benchmark
//! measures a mesh code path next to a baseline in the same run and prints
//! the ratio, so figures from different machines stay comparable.
