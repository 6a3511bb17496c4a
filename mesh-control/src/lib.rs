//! The bundled control plane `meshd`: watches Istio YAML, compiles it per
//! client and serves it over ADS, and hosts the CA.
//!
//! Not yet built: the xDS issue fills this crate.
