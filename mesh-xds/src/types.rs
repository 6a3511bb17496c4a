//! Type URLs and the small protobuf helpers every translation uses:
//! packing into `Any`, durations, `google.protobuf.Struct` from JSON.

use envoy_types::pb::google::protobuf::{self as gp, value::Kind, Any};
use prost::{Message, Name};

/// `type.googleapis.com/envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Packs a message into `Any`.
pub fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Unpacks an `Any` holding a `T`; `None` when the type URL differs or the
/// bytes do not decode.
pub fn unany<T: Message + Name + Default>(a: &Any) -> Option<T> {
    if a.type_url != T::type_url() {
        return None;
    }
    T::decode(a.value.as_slice()).ok()
}

/// A std duration as protobuf.
pub fn dur(d: std::time::Duration) -> gp::Duration {
    gp::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration as std (negative values clamp to zero).
pub fn from_dur(d: &gp::Duration) -> std::time::Duration {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    std::time::Duration::new(secs, nanos)
}

/// A `google.protobuf.UInt32Value`.
pub fn u32v(v: u32) -> gp::UInt32Value {
    gp::UInt32Value { value: v }
}

/// A JSON value as a protobuf `Value`.
pub fn json_to_value(v: &serde_json::Value) -> gp::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(gp::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    gp::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(o: &serde_json::Map<String, serde_json::Value>) -> gp::Struct {
    gp::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A protobuf `Value` as JSON. Whole numbers come back as integers so that
/// JSON round-trips of integer fields stay integers.
pub fn value_to_json(v: &gp::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                // Whole numbers within f64's exact range.
                #[allow(clippy::cast_possible_truncation)]
                let i = *n as i64;
                J::from(i)
            } else {
                serde_json::Number::from_f64(*n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: &gp::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// A `google.protobuf.UInt64Value`.
pub fn u64v(v: u64) -> gp::UInt64Value {
    gp::UInt64Value { value: v }
}
