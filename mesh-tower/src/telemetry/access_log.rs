//! Access logs in Istio's formats: Envoy's text line as Istio configures
//! it by default, or its JSON key set (`accessLogEncoding: JSON`). Lines
//! go through `tracing` (target [`TARGET`], level INFO), so the
//! application's subscriber decides where they are written; they are
//! built only for requests that will be logged.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Request;

use super::record::Outcome;
use super::Reporter;

/// The `tracing` target access log lines are written under.
pub const TARGET: &str = "mesh_access_log";

/// What a log line needs from the request, taken when it starts.
#[derive(Debug, Clone, Default)]
pub struct AccessInfo {
    pub(super) start: Option<SystemTime>,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) protocol: &'static str,
    pub(super) forwarded_for: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) request_id: Option<String>,
    pub(super) authority: Option<String>,
    pub(super) upstream_host: Option<SocketAddr>,
    pub(super) upstream_cluster: Option<String>,
    pub(super) downstream_local: Option<SocketAddr>,
    pub(super) downstream_remote: Option<SocketAddr>,
    pub(super) server_name: Option<String>,
    pub(super) route_name: Option<String>,
}

impl AccessInfo {
    /// Takes what the line needs from `req`.
    pub fn of<B>(req: &Request<B>, start: SystemTime) -> AccessInfo {
        let h = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| h("host"));
        AccessInfo {
            start: Some(start),
            method: req.method().as_str().to_string(),
            path: h("x-envoy-original-path").unwrap_or_else(|| {
                req.uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
            }),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_3 => "HTTP/3",
                _ => "HTTP/1.1",
            },
            forwarded_for: h("x-forwarded-for"),
            user_agent: h("user-agent"),
            request_id: h("x-request-id"),
            authority,
            ..AccessInfo::default()
        }
    }
}

/// Formats `t` as Envoy's `%START_TIME%` (`2026-12-05T01:02:03.456Z`).
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn or_dash(v: Option<&str>) -> &str {
    v.filter(|v| !v.is_empty()).unwrap_or("-")
}

fn details(o: &Outcome) -> &'static str {
    if o.code == 0 {
        "upstream_reset_before_response_started"
    } else if o.flags.as_str() == "-" {
        "via_upstream"
    } else {
        "local_reply"
    }
}

/// The text line, in the field order of Istio's default format.
pub fn text_line(a: &AccessInfo, o: &Outcome, request_bytes: u64, took: Duration) -> String {
    let addr = |s: Option<SocketAddr>| s.map_or_else(|| "-".to_string(), |s| s.to_string());
    let mut line = String::with_capacity(256);
    let _ = write!(
        line,
        "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} {} {}",
        a.start.map_or_else(|| "-".to_string(), format_time),
        a.method,
        a.path,
        a.protocol,
        o.code,
        o.flags.as_str(),
        details(o),
        request_bytes,
        o.response_bytes,
        took.as_millis(),
        or_dash(a.forwarded_for.as_deref()),
        or_dash(a.user_agent.as_deref()),
        or_dash(a.request_id.as_deref()),
        or_dash(a.authority.as_deref()),
        addr(a.upstream_host),
        or_dash(a.upstream_cluster.as_deref()),
        addr(a.downstream_local),
        addr(a.downstream_remote),
        or_dash(a.server_name.as_deref()),
        or_dash(a.route_name.as_deref()),
    );
    line
}

/// The JSON object, with Istio's default JSON keys.
pub fn json_line(a: &AccessInfo, o: &Outcome, request_bytes: u64, took: Duration) -> String {
    let addr = |s: Option<SocketAddr>| s.map(|s| s.to_string());
    serde_json::json!({
        "start_time": a.start.map(format_time),
        "route_name": a.route_name,
        "method": a.method,
        "path": a.path,
        "protocol": a.protocol,
        "response_code": o.code,
        "response_flags": o.flags.as_str(),
        "response_code_details": details(o),
        "connection_termination_details": null,
        "upstream_transport_failure_reason": null,
        "bytes_received": request_bytes,
        "bytes_sent": o.response_bytes,
        "duration": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        "upstream_service_time": null,
        "x_forwarded_for": a.forwarded_for,
        "user_agent": a.user_agent,
        "request_id": a.request_id,
        "authority": a.authority,
        "upstream_host": addr(a.upstream_host),
        "upstream_cluster": a.upstream_cluster,
        "upstream_local_address": null,
        "downstream_local_address": addr(a.downstream_local),
        "downstream_remote_address": addr(a.downstream_remote),
        "requested_server_name": a.server_name,
    })
    .to_string()
}

/// Writes one request's line.
pub(super) fn write(
    a: &AccessInfo,
    reporter: Reporter,
    o: &Outcome,
    request_bytes: u64,
    took: Duration,
    json: bool,
) {
    let line = if json {
        json_line(a, o, request_bytes, took)
    } else {
        text_line(a, o, request_bytes, took)
    };
    let reporter = match reporter {
        Reporter::Source => "outbound",
        Reporter::Destination => "inbound",
    };
    tracing::info!(target: TARGET, direction = reporter, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::Flags;

    fn sample() -> (AccessInfo, Outcome) {
        let req = Request::builder()
            .method("GET")
            .uri("http://reviews:9080/reviews/0?x=1")
            .header("user-agent", "curl/8.5")
            .header("x-request-id", "4d1e-9")
            .body(())
            .unwrap();
        let mut a = AccessInfo::of(&req, UNIX_EPOCH + Duration::from_millis(1_764_900_123_456));
        a.upstream_host = Some("10.0.0.7:9080".parse().unwrap());
        a.upstream_cluster = Some("outbound|9080||reviews.default.svc.cluster.local".into());
        let o = Outcome {
            code: 503,
            grpc_status: None,
            flags: Flags::new(b"UO"),
            request_bytes: 0,
            response_bytes: 81,
            request_messages: 0,
            response_messages: 0,
        };
        (a, o)
    }

    #[test]
    fn text_line_has_istios_default_fields_in_order() {
        let (a, o) = sample();
        let line = text_line(&a, &o, 0, Duration::from_millis(12));
        assert_eq!(
            line,
            "[2025-12-05T02:02:03.456Z] \"GET /reviews/0?x=1 HTTP/1.1\" 503 UO local_reply - \"-\" 0 81 12 - \
             \"-\" \"curl/8.5\" \"4d1e-9\" \"reviews:9080\" \"10.0.0.7:9080\" \
             outbound|9080||reviews.default.svc.cluster.local - - - - -"
        );
    }

    #[test]
    fn json_line_has_istios_keys() {
        let (a, o) = sample();
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&a, &o, 5, Duration::from_millis(3))).unwrap();
        for key in [
            "start_time",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "response_code_details",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_host",
            "upstream_cluster",
            "request_id",
            "authority",
            "downstream_remote_address",
            "user_agent",
            "x_forwarded_for",
            "requested_server_name",
            "route_name",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["response_code"], 503);
        assert_eq!(v["bytes_received"], 5);
        assert_eq!(v["response_flags"], "UO");
        assert_eq!(v["start_time"], "2025-12-05T02:02:03.456Z");
    }
}
