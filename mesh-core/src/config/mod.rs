//! The Istio configuration model: serde types for every resource kind the
//! mesh understands, the loader that reads them from files with precise
//! error locations, and validation with Istio's rules.
//!
//! Types mirror Istio's protobuf messages: struct names are the proto message
//! names in Rust casing (`HTTPRoute` is [`networking::virtual_service::HttpRoute`]),
//! fields are the proto fields in snake_case, serialized in camelCase as users
//! write them. Istio kinds reject unknown fields, because a misspelt field
//! that is silently ignored is a policy that silently does not apply.

pub mod common;
pub mod fingerprint;
pub mod kube;
pub mod load;
pub mod mesh_config;
pub mod networking;
pub mod resource;
pub mod security;
pub mod telemetry;
pub mod validate;
pub mod yaml;

pub use fingerprint::fingerprint;
pub use load::{load_paths, load_str, ConfigError, LoadResult};
pub use mesh_config::MeshConfig;
pub use resource::{Kind, ObjectMeta, Origin, Resource, Spec};
