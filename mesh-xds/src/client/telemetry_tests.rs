//! The telemetry policy's carrier through the client: accepted with its
//! LDS response into the model, refused (NACK) with it when the policy
//! does not decode, while the last good policy keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use mesh_core::config::MeshConfig;
use mesh_core::model::{Client, Model};
use mesh_core::telemetry::TelemetryPolicy;
use tokio::time::Instant;

use super::run::model_of;
use super::state::SotwState;
use crate::encode::{encode, EncodeOptions};
use crate::telemetry_policy::{telemetry_listener, TELEMETRY_LISTENER};
use crate::types::{self, any};

fn telemetry(sampling: &str, filter: &str) -> String {
    format!(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: t, namespace: p}}
spec:
  tracing: [{{randomSamplingPercentage: {sampling}}}]
  accessLogging:
  - providers: [{{name: envoy}}]
    filter: {{expression: "{filter}"}}
"#
    )
}

fn compiled(yaml: &str) -> Model {
    let r = mesh_core::config::load_str(yaml, "t.yaml");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    mesh_core::compile::compile(
        &r.resources,
        &MeshConfig::default(),
        &Client::new("p", Default::default()),
    )
}

fn lds(listeners: &[Listener], version: &str) -> DiscoveryResponse {
    DiscoveryResponse {
        type_url: types::LISTENER.into(),
        version_info: version.into(),
        nonce: version.into(),
        resources: listeners.iter().map(any).collect(),
        ..Default::default()
    }
}

fn cds() -> DiscoveryResponse {
    DiscoveryResponse {
        type_url: types::CLUSTER.into(),
        version_info: "1".into(),
        nonce: "c".into(),
        ..Default::default()
    }
}

/// The listeners of a workload that sees no service, plus the carrier.
fn with_policy(p: &TelemetryPolicy) -> Vec<Listener> {
    let mut l = encode(&compiled(""), &EncodeOptions::default()).listeners;
    l.push(telemetry_listener(p));
    l
}

fn published(st: &SotwState, base: &Model) -> Model {
    model_of(base, &st.assemble().expect("consistent")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_policy_rides_in_and_a_broken_one_is_nacked() {
    let base = compiled("");
    let want = compiled(&telemetry("10", "response.code >= 400"));
    assert_ne!(want.telemetry, base.telemetry);
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    let now = Instant::now();
    st.on_connect(now);
    assert!(
        st.on_response(&lds(&with_policy(&want.telemetry), "1"), now)
            .accepted
    );
    st.on_response(&cds(), now);
    assert_eq!(published(&st, &base).telemetry, want.telemetry);

    // An expression this build cannot compile: the response is refused,
    // naming the listener, and the last good policy stays.
    let text = serde_json::to_string(&*want.telemetry)
        .unwrap()
        .replace("response.code >= 400", "response.code >=");
    let mut carrier = telemetry_listener(&want.telemetry);
    carrier
        .metadata
        .as_mut()
        .unwrap()
        .filter_metadata
        .get_mut("mesh")
        .unwrap()
        .fields
        .insert(
            "telemetry".into(),
            crate::types::json_to_value(&serde_json::Value::String(text)),
        );
    let step = st.on_response(&lds(&[carrier], "2"), now);
    assert!(!step.accepted);
    let msg = &step.requests[0].error_detail.as_ref().unwrap().message;
    assert!(
        msg.contains(TELEMETRY_LISTENER) && msg.contains("invalid CEL"),
        "{msg}"
    );
    assert_eq!(published(&st, &base).telemetry, want.telemetry);

    // A good edit replaces it.
    let mut edited = (*want.telemetry).clone();
    edited.client.tracing.random_sampling_percentage = 20.0;
    assert!(
        st.on_response(&lds(&with_policy(&edited), "3"), now)
            .accepted
    );
    assert_eq!(*published(&st, &base).telemetry, edited);

    // Without the carrier (another control plane): the base model's.
    assert!(st.on_response(&lds(&[], "4"), now).accepted);
    assert_eq!(published(&st, &base).telemetry, base.telemetry);
}

#[test]
fn the_cache_file_keeps_it() {
    // A restart with no control plane serves the cached resources: the
    // policy comes back with them.
    let base = compiled("");
    let want = compiled(&telemetry("10", "response.code >= 400"));
    let res = crate::encode::Resources {
        listeners: with_policy(&want.telemetry),
        ..Default::default()
    };
    let back = super::cache::decode_cache(&super::cache::encode_cache(&res)).unwrap();
    let mut st = SotwState::new(Duration::from_secs(15), Duration::from_secs(2));
    st.load(back);
    assert_eq!(published(&st, &base).telemetry, want.telemetry);
}
