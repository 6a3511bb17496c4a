//! route (filled by its owner).
