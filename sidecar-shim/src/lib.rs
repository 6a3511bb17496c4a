//! `mesh-shim`: the small proxy for workloads not written in Rust, built only
//! from `mesh-tower` layers.
//!
//! Not yet built: a later issue fills this crate.
