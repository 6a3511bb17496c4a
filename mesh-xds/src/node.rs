//! Node (TODO).
