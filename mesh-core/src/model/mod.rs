//! The compiled data-plane model: what one client (a workload identified by
//! namespace, labels and service account) needs to route its outbound
//! requests and police its inbound ones. The SDK layers execute it, xDS
//! carries it, and `meshctl x` explains it.

pub mod client;

pub use client::Client;
