//! Route matching bench (filled by its owner).
fn main() {}
