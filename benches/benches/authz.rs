//! Authorization bench (filled by its owner).
fn main() {}
