//! Envoy v3 xDS for the mesh: translation between the compiled model and
//! Envoy protobuf resources, the ADS server that `meshd` runs and the ADS
//! client the SDK and the shim use.
//!
//! Not yet built: the traffic and xDS issues fill this crate. It exists now so
//! the workspace has its final shape and the dependency graph is fixed early.
