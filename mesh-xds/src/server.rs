//! Server (TODO).
