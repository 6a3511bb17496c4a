//! The outlier detector state machine (being built).
