//! SPIFFE identities (filled by its owner).
