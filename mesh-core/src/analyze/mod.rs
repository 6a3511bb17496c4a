//! analyze (filled by its owner).
