//! Outbound client layers (being built).
