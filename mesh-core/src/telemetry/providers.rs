//! Looking a provider name up as istiod does (`fetchProvider`): MeshConfig
//! `extensionProviders` by case-insensitive name, over Istio's built-in
//! `prometheus`, `stackdriver` and `envoy` (a file log to `/dev/stdout`),
//! which istiod's default mesh config always defines and a user entry of
//! the same name replaces.

use crate::config::mesh_config::providers::{
    EnvoyFileAccessLogProvider, ExtensionProvider, PrometheusProvider,
};
use crate::config::MeshConfig;

/// The provider called `name`, if any.
pub fn fetch(mesh: &MeshConfig, name: &str) -> Option<ExtensionProvider> {
    if let Some(p) = mesh
        .extension_providers
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        return Some(p.clone());
    }
    let builtin = |n: &str| ExtensionProvider {
        name: n.to_string(),
        ..ExtensionProvider::default()
    };
    match name.to_ascii_lowercase().as_str() {
        "prometheus" => Some(ExtensionProvider {
            prometheus: Some(PrometheusProvider {}),
            ..builtin("prometheus")
        }),
        "stackdriver" => Some(ExtensionProvider {
            stackdriver: Some(serde_json::json!({})),
            ..builtin("stackdriver")
        }),
        "envoy" => Some(ExtensionProvider {
            envoy_file_access_log: Some(EnvoyFileAccessLogProvider {
                path: Some("/dev/stdout".to_string()),
                log_format: None,
            }),
            ..builtin("envoy")
        }),
        _ => None,
    }
}

/// The names of the providers a Telemetry list refers to.
pub(crate) fn names(refs: &[crate::config::telemetry::ProviderRef]) -> Vec<String> {
    refs.iter().map(|p| p.name.clone()).collect()
}
