//! Fault injection decisions (being built).
