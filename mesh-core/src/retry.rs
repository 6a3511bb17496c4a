//! Retry policy (filled by its owner).
