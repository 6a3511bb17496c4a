//! Access logs in Istio's formats: Envoy's default text line as Istio
//! configures it, its JSON key set (`accessLogEncoding: JSON`), or any
//! format a provider gives, written with Envoy's command operators
//! (`%REQ(:METHOD)%`, `%RESPONSE_CODE%`, ...). Lines to `/dev/stdout` or
//! `/dev/stderr` go through `tracing` (target [`TARGET`], level INFO),
//! so the application's subscriber decides where they are written; other
//! paths are appended to by a writer thread, off the request path.
//! Lines are built only for requests that are logged.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Request};
use mesh_core::sync::LockExt;
use mesh_core::telemetry::{AccessLogSink, LogFormat};

use super::record::Outcome;
use super::Reporter;

/// The `tracing` target access log lines are written under.
pub const TARGET: &str = "mesh_access_log";

/// Istio's default text format (MeshConfig `accessLogFormat` unset).
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// Istio's default JSON keys and the operator each one holds.
pub const DEFAULT_JSON: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// What a log line (and a CEL expression) needs from the request, taken
/// when it starts.
#[derive(Debug, Clone, Default)]
pub struct AccessInfo {
    pub(super) start: Option<SystemTime>,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) scheme: Option<String>,
    pub(super) protocol: &'static str,
    pub(super) authority: Option<String>,
    pub(super) headers: HeaderMap,
    pub(super) upstream_host: Option<SocketAddr>,
    pub(super) upstream_cluster: Option<String>,
    pub(super) downstream_local: Option<SocketAddr>,
    pub(super) downstream_remote: Option<SocketAddr>,
    pub(super) server_name: Option<String>,
    pub(super) route_name: Option<String>,
}

impl AccessInfo {
    /// Takes what lines and expressions need from `req`.
    pub fn of<B>(req: &Request<B>, start: SystemTime) -> AccessInfo {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
        AccessInfo {
            start: Some(start),
            method: req.method().as_str().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            scheme: req.uri().scheme_str().map(str::to_string),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_3 => "HTTP/3",
                _ => "HTTP/1.1",
            },
            authority,
            headers: req.headers().clone(),
            ..AccessInfo::default()
        }
    }

    /// A request header, several values joined with `,`.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        Some(values.fold(first.to_string(), |mut acc, v| {
            acc.push(',');
            acc.push_str(v);
            acc
        }))
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

/// Envoy's `%RESPONSE_CODE_DETAILS%` for an outcome.
pub(super) fn details(o: &Outcome) -> &'static str {
    if o.code == 0 {
        "upstream_reset_before_response_started"
    } else if o.flags.as_str() == "-" {
        "via_upstream"
    } else {
        "local_reply"
    }
}

/// Everything a line can name about one finished request.
pub struct Line<'a> {
    /// The request.
    pub info: &'a AccessInfo,
    /// How it ended.
    pub outcome: &'a Outcome,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Until the response's last byte.
    pub took: Duration,
}

/// A value an operator gave: text, a number, or nothing (`-` in text,
/// `null` in JSON).
enum Value {
    Text(String),
    Number(u64),
    None,
}

impl Line<'_> {
    fn operator(&self, op: &str) -> Value {
        let a = self.info;
        let o = self.outcome;
        let text = |s: Option<String>| s.filter(|s| !s.is_empty()).map_or(Value::None, Value::Text);
        let addr = |s: Option<SocketAddr>| text(s.map(|s| s.to_string()));
        if let Some(names) = op.strip_prefix("REQ(").and_then(|r| r.strip_suffix(')')) {
            let (names, _max) = names.split_once("):").unwrap_or((names, ""));
            return text(names.split('?').find_map(|n| self.request_header(n)));
        }
        match op {
            "START_TIME" => text(a.start.map(format_time)),
            "PROTOCOL" => Value::Text(a.protocol.to_string()),
            "RESPONSE_CODE" => Value::Number(u64::from(o.code)),
            "RESPONSE_FLAGS" => Value::Text(o.flags.as_str().to_string()),
            "RESPONSE_CODE_DETAILS" => Value::Text(details(o).to_string()),
            "GRPC_STATUS_NUMBER" => o
                .grpc_status
                .map_or(Value::None, |g| Value::Number(u64::from(g))),
            "BYTES_RECEIVED" => Value::Number(self.request_bytes),
            "BYTES_SENT" => Value::Number(o.response_bytes),
            "DURATION" => Value::Number(u64::try_from(self.took.as_millis()).unwrap_or(u64::MAX)),
            "UPSTREAM_HOST" => addr(a.upstream_host),
            "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => text(a.upstream_cluster.clone()),
            "DOWNSTREAM_LOCAL_ADDRESS" => addr(a.downstream_local),
            "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
                addr(a.downstream_remote)
            }
            "REQUESTED_SERVER_NAME" => text(a.server_name.clone()),
            "ROUTE_NAME" => text(a.route_name.clone()),
            // What Envoy knows about connections and upstream timing that
            // an in-process stack does not: always empty.
            _ => Value::None,
        }
    }

    fn request_header(&self, name: &str) -> Option<String> {
        let a = self.info;
        match name.to_ascii_lowercase().as_str() {
            ":method" => Some(a.method.clone()),
            ":path" => Some(a.path.clone()),
            ":authority" | "host" => a.authority.clone(),
            ":scheme" => a.scheme.clone(),
            other => a.header(other),
        }
    }

    /// The line in an Envoy text format: each `%OPERATOR%` replaced, `-`
    /// for an empty value, `%%` a literal percent.
    pub fn text(&self, format: &str) -> String {
        let mut out = String::with_capacity(format.len() + 64);
        let mut rest = format;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
                continue;
            }
            let Some(end) = after.find('%') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            match self.operator(&after[..end]) {
                Value::Text(t) => out.push_str(&t),
                Value::Number(n) => out.push_str(&n.to_string()),
                Value::None => out.push('-'),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The line as a JSON object of `fields` (key to format): a value that
    /// is one operator keeps its type (numbers stay numbers, nothing is
    /// `null`), as Envoy's JSON formatter does.
    pub fn json<'f>(&self, fields: impl IntoIterator<Item = (&'f str, &'f str)>) -> String {
        let mut map = serde_json::Map::new();
        for (key, format) in fields {
            let single = format
                .strip_prefix('%')
                .and_then(|f| f.strip_suffix('%'))
                .filter(|f| !f.contains('%'));
            let value = match single.map(|op| self.operator(op)) {
                Some(Value::Text(t)) => serde_json::Value::String(t),
                Some(Value::Number(n)) => serde_json::Value::from(n),
                Some(Value::None) => serde_json::Value::Null,
                None => serde_json::Value::String(self.text(format)),
            };
            map.insert(key.to_string(), value);
        }
        serde_json::Value::Object(map).to_string()
    }

    /// The line in `format`.
    pub fn render(&self, format: &LogFormat) -> String {
        match format {
            LogFormat::DefaultText => self.text(DEFAULT_FORMAT),
            LogFormat::Text(f) => self.text(f.trim_end_matches('\n')),
            LogFormat::Json(None) => self.json(DEFAULT_JSON),
            LogFormat::Json(Some(fields)) => {
                let fields: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                    .collect();
                self.json(fields)
            }
        }
    }
}

/// Writes `line` to `sink`.
pub(super) fn write(sink: &AccessLogSink, line: &Line<'_>, reporter: Reporter) {
    let direction = match reporter {
        Reporter::Source => "outbound",
        Reporter::Destination => "inbound",
    };
    match sink {
        AccessLogSink::File { path, format } => {
            let text = line.render(format);
            match path.as_str() {
                "/dev/stdout" | "/dev/stderr" | "" => {
                    tracing::info!(target: TARGET, direction, "{text}");
                }
                path => append(path, text),
            }
        }
        // Not written by the SDK yet: named once so the gap is visible.
        AccessLogSink::OpenTelemetry(_) | AccessLogSink::Grpc(_) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!(
                    "access log providers other than files (envoyOtelAls, envoyHttpAls) are not written by the SDK"
                );
            });
        }
    }
}

/// Appends `line` to the file at `path` from a writer thread per file, so
/// a slow disk never holds a request. Lines beyond a backlog of 8192 are
/// dropped (and counted in the log when the writer catches up).
fn append(path: &str, line: String) {
    static WRITERS: OnceLock<Mutex<HashMap<String, SyncSender<String>>>> = OnceLock::new();
    let mut writers = WRITERS.get_or_init(Default::default).locked();
    let tx = writers.entry(path.to_string()).or_insert_with(|| {
        let (tx, rx) = sync_channel::<String>(8192);
        let path = path.to_string();
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path);
            let mut file = match file {
                Ok(f) => std::io::BufWriter::new(f),
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "cannot open the access log file");
                    return;
                }
            };
            while let Ok(line) = rx.recv() {
                let _ = writeln!(file, "{line}");
                // Write what is waiting, then flush, so lines show soon
                // without a write per line under load.
                while let Ok(next) = rx.try_recv() {
                    let _ = writeln!(file, "{next}");
                }
                let _ = file.flush();
            }
        });
        tx
    });
    let _ = tx.try_send(line);
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
        let line = Line {
            info: &a,
            outcome: &o,
            request_bytes: 0,
            took: Duration::from_millis(12),
        };
        assert_eq!(
            line.render(&LogFormat::DefaultText),
            "[2025-12-05T02:02:03.456Z] \"GET /reviews/0?x=1 HTTP/1.1\" 503 UO local_reply - \"-\" 0 81 12 - \
             \"-\" \"curl/8.5\" \"4d1e-9\" \"reviews:9080\" \"10.0.0.7:9080\" \
             outbound|9080||reviews.default.svc.cluster.local - - - - -"
        );
        // A format of one's own, with %% and an alternative header.
        assert_eq!(
            line.text("%REQ(X-MISSING?USER-AGENT)% 100%% %RESPONSE_CODE%/%GRPC_STATUS_NUMBER%"),
            "curl/8.5 100% 503/-"
        );
    }

    #[test]
    fn json_line_has_istios_keys_and_types() {
        let (a, o) = sample();
        let line = Line {
            info: &a,
            outcome: &o,
            request_bytes: 5,
            took: Duration::from_millis(3),
        };
        let v: serde_json::Value =
            serde_json::from_str(&line.render(&LogFormat::Json(None))).unwrap();
        for (key, _) in DEFAULT_JSON {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["response_code"], 503);
        assert_eq!(v["bytes_received"], 5);
        assert_eq!(v["duration"], 3);
        assert_eq!(v["response_flags"], "UO");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["request_id"], "4d1e-9");
        assert_eq!(v["start_time"], "2025-12-05T02:02:03.456Z");
        assert!(v["x_forwarded_for"].is_null());
        // Labels of one's own.
        let mut fields = serde_json::Map::new();
        fields.insert("code".into(), "%RESPONSE_CODE%".into());
        fields.insert("what".into(), "%REQ(:METHOD)% %REQ(:PATH)%".into());
        let v: serde_json::Value =
            serde_json::from_str(&line.render(&LogFormat::Json(Some(fields)))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 503, "what": "GET /reviews/0?x=1"})
        );
    }
}
