//! Telemetry: spans, metrics and access logs of the requests the SDK serves and sends.
#[cfg(feature = "otlp")]
pub mod otlp;
