//! authz (filled by its owner).
