//! compile (filled by its owner).
