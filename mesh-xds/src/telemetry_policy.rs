//! A workload's compiled Telemetry API policy
//! ([`mesh_core::telemetry::TelemetryPolicy`]) on the xDS wire, so an SDK
//! workload fed by meshd records the metrics, spans and access logs that
//! `Mesh::local` would compile for it from the same YAML.
//!
//! # The carrier: one reserved Listener, for SDK nodes only
//!
//! The policy travels as a Listener named [`TELEMETRY_LISTENER`]
//! (`mesh.telemetry`) with no address, no filter chain and no
//! `api_listener`: only `metadata.filter_metadata["mesh"]["telemetry"]`,
//! a string holding the policy's JSON (serde of mesh-core's types). Why
//! this shape:
//!
//! - **Per identity, not shared.** A Telemetry resource picks workloads by
//!   namespace and labels, so the policy belongs to the client identity.
//!   meshd shares the outbound side (client listeners, routes, clusters,
//!   endpoints) across every identity that sees the same services; the
//!   policy must not ride there, or one identity's policy would leak to
//!   another, or would split the sharing apart. It rides with the
//!   identity's own listeners (the server-side ones, which meshd already
//!   keeps per identity and hands each node as its overlay), and its bytes
//!   depend on the policy alone: an edit elsewhere leaves the resource, and
//!   its version, as they were.
//! - **A Listener, not a type of our own.** The SDK's client already
//!   subscribes to every listener (wildcard LDS), validates each response
//!   whole and NACKs what it cannot decode while the last good resources
//!   keep serving; a new type URL would need its own subscription, ACK
//!   bookkeeping, cache-file field and CSDS view for nothing.
//! - **Not in the inbound listeners' metadata.** A workload that serves no
//!   port has no inbound listener, and still has client-side telemetry.
//! - **Only to our SDK.** Envoy subscribes to every listener too and would
//!   NACK a listener without an address; stock gRPC clients ask for
//!   listeners by name and would never name it, but meshd does not rely on
//!   that: it adds the listener only for nodes whose metadata carries the
//!   SDK's [`crate::node::MESH_SDK`] key.
//! - **JSON text, not a `Struct`.** A protobuf `Struct` turns every number
//!   into a double and its map encodes in hash order; the text keeps the
//!   policy exact (integers, sampling rates, provider settings as written)
//!   and its bytes stable, so equal policies are equal resources.
//!
//! # Receiving it
//!
//! Decoding recompiles every CEL expression from its source. A policy
//! that does not decode (an expression this build cannot compile, a field
//! it does not know) fails the whole LDS response: the client NACKs it
//! and keeps the last good model, telemetry included. Without the
//! listener (another control plane, such as istiod) the model keeps the
//! policy the SDK's own MeshConfig gives with no Telemetry resource.
//!
//! Not here: computing the policy (mesh-core's `telemetry::policy_for`)
//! and executing it (mesh-tower's `telemetry`).

use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_core::telemetry::TelemetryPolicy;

use crate::decode::DecodeError;

/// Name of the Listener that carries the policy. Outbound listeners are
/// `host:port` and server listeners start with
/// [`crate::encode::INBOUND_LISTENER_PREFIX`], so no other listener can
/// have it.
pub const TELEMETRY_LISTENER: &str = "mesh.telemetry";

/// Key of the policy inside our listener metadata.
const TELEMETRY_KEY: &str = "telemetry";

/// The Listener that carries `policy`.
pub fn telemetry_listener(policy: &TelemetryPolicy) -> Listener {
    // Plain data with string keys: serializing cannot fail.
    let text = serde_json::to_string(policy).unwrap_or_default();
    let mut md = serde_json::Map::new();
    md.insert(TELEMETRY_KEY.into(), serde_json::Value::String(text));
    Listener {
        name: TELEMETRY_LISTENER.to_string(),
        metadata: crate::encode::mesh_metadata(md),
        ..Listener::default()
    }
}

/// Whether `l` is the policy's carrier (by its reserved name).
pub fn is_telemetry_listener(l: &Listener) -> bool {
    l.name == TELEMETRY_LISTENER
}

/// The policy a [`TELEMETRY_LISTENER`] carries.
pub fn decode_telemetry_listener(l: &Listener) -> Result<TelemetryPolicy, DecodeError> {
    let md = crate::decode::mesh_md(l.metadata.as_ref()).ok_or(DecodeError::Missing {
        resource: l.name.clone(),
        field: "metadata.filter_metadata.mesh",
    })?;
    let text = md
        .get(TELEMETRY_KEY)
        .and_then(serde_json::Value::as_str)
        .ok_or(DecodeError::Missing {
            resource: l.name.clone(),
            field: "metadata.filter_metadata.mesh.telemetry",
        })?;
    serde_json::from_str(text)
        .map_err(|e| DecodeError::invalid(&l.name, format!("telemetry policy: {e}")))
}

/// The policy among `listeners`, decoded, when one carries it.
pub fn find_telemetry<'a>(
    mut listeners: impl Iterator<Item = &'a Listener>,
) -> Result<Option<TelemetryPolicy>, DecodeError> {
    listeners
        .find(|l| is_telemetry_listener(l))
        .map(decode_telemetry_listener)
        .transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::{any, unany};
    use mesh_core::config::load::load_str;
    use mesh_core::config::MeshConfig;
    use mesh_core::model::Client;

    fn policy(yaml: &str) -> TelemetryPolicy {
        let res = load_str(yaml, "t.yaml").into_result().unwrap();
        let client = Client::new(
            "default",
            [("app".to_string(), "a".to_string())].into_iter().collect(),
        );
        let m = mesh_core::compile::compile(&res, &MeshConfig::default(), &client);
        (*m.telemetry).clone()
    }

    const TELEMETRY: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
  tracing:
  - randomSamplingPercentage: 10
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
"#;

    #[test]
    fn round_trips_through_the_wire() {
        let p = policy(TELEMETRY);
        let l = telemetry_listener(&p);
        let back: Listener = unany(&any(&l)).unwrap();
        assert_eq!(decode_telemetry_listener(&back).unwrap(), p);
        assert_eq!(find_telemetry([&back].into_iter()).unwrap(), Some(p));
    }

    #[test]
    fn equal_policies_are_equal_bytes() {
        let a = any(&telemetry_listener(&policy(TELEMETRY)));
        let b = any(&telemetry_listener(&policy(TELEMETRY)));
        assert_eq!(a, b);
        let other = any(&telemetry_listener(&policy(&TELEMETRY.replace(
            "randomSamplingPercentage: 10",
            "randomSamplingPercentage: 20",
        ))));
        assert_ne!(a, other);
    }

    #[test]
    fn what_does_not_decode_is_an_error() {
        let mut l = telemetry_listener(&policy(TELEMETRY));
        let md = l.metadata.as_mut().unwrap();
        let s = md.filter_metadata.get_mut("mesh").unwrap();
        let text = match &s.fields["telemetry"].kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(t)) => t.clone(),
            _ => panic!("a string"),
        };
        let broken = text.replace("response.code >= 400", "response.code >=");
        s.fields.insert(
            "telemetry".into(),
            crate::types::json_to_value(&serde_json::Value::String(broken)),
        );
        let err = decode_telemetry_listener(&l).unwrap_err().to_string();
        assert!(err.contains("invalid CEL expression"), "{err}");
        let bare = Listener {
            name: TELEMETRY_LISTENER.into(),
            ..Listener::default()
        };
        assert!(decode_telemetry_listener(&bare).is_err());
    }
}
