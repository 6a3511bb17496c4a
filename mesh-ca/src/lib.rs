//! Certificate authority and SPIFFE workload identity: root handling, CSR
//! signing, the Istio-compatible `IstioCertificateService` API and the
//! client-side rotation that feeds rustls.
//!
//! Not yet built: the security issue fills this crate.
