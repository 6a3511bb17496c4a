//! registry (filled by its owner).
