//! Inbound server layers (being built).
