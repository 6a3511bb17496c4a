//! Types shared by several Istio resources: durations, string matches,
//! percentages, workload selectors, policy target references and port
//! selectors, with the validation Istio applies to each.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::{check_regex, field, Issues, Validate};

/// Labels as Kubernetes writes them. Ordered so output is deterministic.
pub type Labels = BTreeMap<String, String>;

/// True when `labels` carries every label of `selector` with the same
/// value. The one label-selector test: workload selectors (security kinds,
/// Sidecar, ServiceEntry), `sourceLabels`, subsets, controller selectors.
/// An empty selector matches everything, as in Kubernetes.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Kubernetes Service's selector: [`selector_matches`], except that an
/// empty selector selects nothing (a Service without one has no pods).
pub fn service_selects(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector_matches(selector, labels)
}

/// A duration as Istio accepts it in YAML: Go syntax (`1h2m3.5s`, `250ms`,
/// `30s`), which includes protobuf JSON's `1.5s` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why}; expected a number with a unit such as 250ms, 10s, 1m or 1h30m")]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
    /// What was wrong with it.
    pub why: &'static str,
}

impl Duration {
    /// Builds a duration from milliseconds.
    pub fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// Builds a duration from seconds.
    pub fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    /// The std duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Istio's rule for most durations: at least 1ms and a whole number of
    /// milliseconds, because Envoy's configuration carries milliseconds.
    pub fn check_ms(self, path: &str, issues: &mut Issues) {
        if self.0 < std::time::Duration::from_millis(1) {
            issues.push(
                path,
                format!("duration {self} is shorter than 1ms; use at least 1ms"),
            );
        } else if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            issues.push(
                path,
                format!("duration {self} has sub-millisecond precision; only whole milliseconds are supported"),
            );
        }
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError {
            input: input.to_string(),
            why,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.starts_with('-') {
            return Err(err("it is negative"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(Self::default());
        }
        let mut total: f64 = 0.0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("a number is missing its unit"))?;
            if num_len == 0 {
                return Err(err("a unit is missing its number"));
            }
            let value: f64 = rest[..num_len]
                .parse()
                .map_err(|_| err("a number is malformed"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" | "μs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(err("the unit is unknown (use ns, us, ms, s, m or h)")),
            };
            rest = &rest[unit_len..];
            total += value * scale;
        }
        if !total.is_finite() || total > 1e12 {
            return Err(err("it is too large"));
        }
        // Round to nanoseconds so "0.1s" is exactly 100ms.
        let nanos = (total * 1e9).round() as u64;
        Ok(Self(std::time::Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let nanos = d.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            let secs = d.as_secs();
            if secs.is_multiple_of(3600) {
                write!(f, "{}h", secs / 3600)
            } else if secs.is_multiple_of(60) {
                write!(f, "{}m", secs / 60)
            } else {
                write!(f, "{secs}s")
            }
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration as the deserializer reads it: Go's `time.ParseDuration`
/// syntax (`5s`, `250ms`, `1h30m`, `0`), optionally signed `+`, never
/// negative. Shared with the CRD schemas so the API server rejects what
/// meshd would reject.
pub const DURATION_PATTERN: &str =
    r"^\s*\+?(0|(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)\s*$";

/// A duration is a string such as `5s` or `1h30m` (see [`DURATION_PATTERN`]),
/// which is all the hand-written `Deserialize` accepts.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `regex`. In a
/// header or query match an empty `{}` means "present with any value".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact string match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix match (a raw string prefix, not path segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression, matched against the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The one kind a [`StringMatch`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatchKind<'a> {
    /// `exact`.
    Exact(&'a str),
    /// `prefix`.
    Prefix(&'a str),
    /// `regex`.
    Regex(&'a str),
    /// `{}`: any value, as long as it is present.
    Present,
}

impl StringMatch {
    /// An exact match.
    pub fn exact(s: impl Into<String>) -> Self {
        Self {
            exact: Some(s.into()),
            ..Self::default()
        }
    }

    /// A prefix match.
    pub fn prefix(s: impl Into<String>) -> Self {
        Self {
            prefix: Some(s.into()),
            ..Self::default()
        }
    }

    /// A regex match.
    pub fn regex(s: impl Into<String>) -> Self {
        Self {
            regex: Some(s.into()),
            ..Self::default()
        }
    }

    /// The kind this match holds. When validation has not run and several are
    /// set, `exact` wins over `prefix` over `regex`.
    pub fn kind(&self) -> StringMatchKind<'_> {
        match (&self.exact, &self.prefix, &self.regex) {
            (Some(e), _, _) => StringMatchKind::Exact(e),
            (None, Some(p), _) => StringMatchKind::Prefix(p),
            (None, None, Some(r)) => StringMatchKind::Regex(r),
            (None, None, None) => StringMatchKind::Present,
        }
    }
}

impl Validate for StringMatch {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            issues.push(
                path,
                "only one of exact, prefix or regex may be set in a string match",
            );
        }
        if let Some(re) = &self.regex {
            check_regex(re, &field(path, "regex"), issues);
        }
    }
}

/// A percentage in `[0, 100]`, as Istio's `Percent` message (`value: 12.5`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage, 0 to 100, fractions allowed.
    #[serde(default)]
    pub value: f64,
}

impl Validate for Percent {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_percent(self.value, &field(path, "value"), issues);
    }
}

/// Checks a percentage lies in `[0, 100]`.
pub fn check_percent(value: f64, path: &str, issues: &mut Issues) {
    if !(0.0..=100.0).contains(&value) || value.is_nan() {
        issues.push(
            path,
            format!("percentage {value} is out of range; expected 0 to 100"),
        );
    }
}

/// Istio's `WorkloadSelector`: the labels a workload must carry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Every label here must be present on the workload with the same value.
    #[serde(default)]
    pub match_labels: Labels,
}

impl WorkloadSelector {
    /// True when `labels` carries every label of the selector. An empty
    /// selector matches everything, as in Kubernetes.
    pub fn matches(&self, labels: &Labels) -> bool {
        selector_matches(&self.match_labels, labels)
    }
}

impl Validate for WorkloadSelector {
    fn validate(&self, path: &str, issues: &mut Issues) {
        for (k, v) in &self.match_labels {
            let p = format!("{}.{k}", field(path, "matchLabels"));
            if k.is_empty() {
                issues.push(&p, "label key must not be empty");
            }
            if k.contains('*') || v.contains('*') {
                issues.push(
                    &p,
                    "wildcards are not allowed in label selectors; list the exact label value",
                );
            }
        }
    }
}

/// Istio's `PolicyTargetReference` (`targetRef`/`targetRefs`): binds a policy
/// to a Gateway API resource or a Service instead of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target (`gateway.networking.k8s.io`, `""` for core).
    #[serde(default)]
    pub group: String,
    /// Kind of the target (`Gateway`, `Service`, `ServiceEntry`, `GatewayClass`).
    #[serde(default)]
    pub kind: String,
    /// Name of the target.
    #[serde(default)]
    pub name: String,
    /// Namespace of the target; must be the policy's own namespace if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Validate for PolicyTargetReference {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.name.is_empty() {
            issues.push(field(path, "name"), "targetRef.name is required");
        }
        const KINDS: [(&str, &str); 4] = [
            ("gateway.networking.k8s.io", "Gateway"),
            ("gateway.networking.k8s.io", "GatewayClass"),
            ("", "Service"),
            ("networking.istio.io", "ServiceEntry"),
        ];
        if !KINDS
            .iter()
            .any(|(g, k)| *g == self.group && *k == self.kind)
        {
            issues.push(
                field(path, "kind"),
                format!(
                    "unsupported targetRef {}/{}; expected Gateway or GatewayClass (group gateway.networking.k8s.io), Service (group \"\") or ServiceEntry (group networking.istio.io)",
                    self.group, self.kind
                ),
            );
        }
    }
}

/// Istio's `PortSelector`: a port by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number.
    #[serde(default)]
    pub number: u32,
}

impl Validate for PortSelector {
    fn validate(&self, path: &str, issues: &mut Issues) {
        super::validate::check_port(self.number, &field(path, "number"), issues);
    }
}

/// Validates how a policy is bound to workloads: at most one of `selector`,
/// `targetRef` and `targetRefs`, each well formed. Shared by every policy
/// kind that has the three (AuthorizationPolicy, RequestAuthentication,
/// Telemetry, ...).
pub fn check_targeting(
    path: &str,
    selector: &Option<WorkloadSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    issues: &mut Issues,
) {
    check_selector_exclusive(
        path,
        selector.is_some(),
        target_ref.is_some(),
        !target_refs.is_empty(),
        issues,
    );
    selector.validate(&field(path, "selector"), issues);
    target_ref.validate(&field(path, "targetRef"), issues);
    super::validate::each(target_refs, &field(path, "targetRefs"), issues);
}

/// Validates that at most one of `selector`, `targetRef` and `targetRefs` is
/// set, which is Istio's rule for every policy kind that has them.
pub fn check_selector_exclusive(
    path: &str,
    has_selector: bool,
    has_target_ref: bool,
    has_target_refs: bool,
    issues: &mut Issues,
) {
    let n = [has_selector, has_target_ref, has_target_refs]
        .iter()
        .filter(|b| **b)
        .count();
    if n > 1 {
        issues.push(
            path,
            "only one of selector, targetRef or targetRefs may be set; pick labels (selector) or a resource (targetRefs)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> std::time::Duration {
        s.parse::<Duration>().map(|d| d.0).unwrap_or_default()
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(d("10s"), std::time::Duration::from_secs(10));
        assert_eq!(d("250ms"), std::time::Duration::from_millis(250));
        assert_eq!(d("1.5s"), std::time::Duration::from_millis(1500));
        assert_eq!(d("1h30m"), std::time::Duration::from_secs(5400));
        assert_eq!(d("0.1s"), std::time::Duration::from_millis(100));
        assert!("10".parse::<Duration>().is_err());
        assert!("-1s".parse::<Duration>().is_err());
        assert!("1d".parse::<Duration>().is_err());
        assert!("s".parse::<Duration>().is_err());
    }

    #[test]
    fn duration_display_round_trips() {
        for s in ["10s", "250ms", "3m", "1h", "1500ms", "5us"] {
            let v: Duration = s.parse().unwrap_or_default();
            assert_eq!(v.to_string(), s);
        }
    }

    #[test]
    fn ms_precision_rule() {
        let mut issues = Issues::new();
        Duration(std::time::Duration::from_micros(500)).check_ms("spec.timeout", &mut issues);
        Duration(std::time::Duration::from_micros(1500)).check_ms("spec.timeout", &mut issues);
        Duration::from_millis(1).check_ms("spec.timeout", &mut issues);
        assert_eq!(issues.errors().len(), 2);
    }

    #[test]
    fn string_match_oneof() {
        let mut issues = Issues::new();
        let m = StringMatch {
            exact: Some("a".into()),
            prefix: Some("b".into()),
            regex: None,
        };
        m.validate("m", &mut issues);
        StringMatch::regex("(unclosed").validate("r", &mut issues);
        assert_eq!(issues.errors().len(), 2);
        assert_eq!(issues.errors()[1].path, "r.regex");
        assert_eq!(StringMatch::default().kind(), StringMatchKind::Present);
    }

    #[test]
    fn selector_matching() {
        let sel = WorkloadSelector {
            match_labels: [("app".to_string(), "a".to_string())].into(),
        };
        let mut labels = Labels::new();
        assert!(!sel.matches(&labels));
        labels.insert("app".into(), "a".into());
        labels.insert("version".into(), "v1".into());
        assert!(sel.matches(&labels));
        assert!(WorkloadSelector::default().matches(&Labels::new()));
    }
}
