//! Load balancing, outlier detection and connection-pool limits (being built).
