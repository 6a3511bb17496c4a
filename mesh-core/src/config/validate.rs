//! Validation plumbing shared by every resource type: a collector of field
//! errors addressed by path, and the checks many resources share (durations,
//! regexes, percentages, label selectors).
//!
//! Paths use the same syntax as the loader's line index
//! (`spec.http[0].route[1].weight`), so every validation error can be turned
//! into a file and line without the validators knowing about files.

use std::fmt;

/// One problem with one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field from the document root, e.g. `spec.http[0].timeout`.
    pub path: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects field errors while walking a resource.
#[derive(Debug, Default, Clone)]
pub struct Issues {
    errors: Vec<FieldError>,
}

impl Issues {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the field at `path` is wrong, with a message saying why
    /// and what would be right.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The recorded errors, in the order they were found.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// Consumes the collector.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }
}

/// Implemented by every spec type: records problems under `path` (the path
/// of `self`, e.g. `spec` or `spec.http[2]`).
pub trait Validate {
    /// Checks `self`, recording every problem found rather than stopping at
    /// the first, so a user fixes a file in one pass.
    fn validate(&self, path: &str, issues: &mut Issues);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if let Some(v) = self {
            v.validate(path, issues);
        }
    }
}

/// Validates each element of a list under `path[i]`.
pub fn each<T: Validate>(items: &[T], path: &str, issues: &mut Issues) {
    for (i, item) in items.iter().enumerate() {
        item.validate(&format!("{path}[{i}]"), issues);
    }
}

/// Joins a parent path and a field name.
pub fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Checks that `re` compiles as an RE2-style regular expression (the `regex`
/// crate has RE2's syntax and linear-time guarantee, which is what Envoy uses).
pub fn check_regex(re: &str, path: &str, issues: &mut Issues) {
    if let Err(e) = regex::Regex::new(re) {
        issues.push(
            path,
            format!("invalid RE2 regular expression {re:?}: {e}; Envoy uses RE2 syntax (no look-around or back-references)"),
        );
    }
}

/// Checks a DNS-1123 label value such as a port name or subset name.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a port number is in 1..=65535.
pub fn check_port(port: u32, path: &str, issues: &mut Issues) {
    if port == 0 || port > 65535 {
        issues.push(
            path,
            format!("port {port} is out of range; expected 1-65535"),
        );
    }
}
