//! Load-balancing algorithms as pure functions and state (being built).
