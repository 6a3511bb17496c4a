//! Decode (TODO).
