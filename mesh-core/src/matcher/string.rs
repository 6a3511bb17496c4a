//! Envoy's `StringMatcher` as a compiled value.

use serde::{Serialize, Serializer};

/// A regex that must match the whole value (Envoy's `safe_regex`).
#[derive(Debug, Clone)]
pub struct FullRegex {
    source: String,
    re: regex::Regex,
}

impl FullRegex {
    /// Compiles `pattern` anchored at both ends.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            source: pattern.to_string(),
            re: regex::Regex::new(&format!("^(?:{pattern})$"))?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

impl PartialEq for FullRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for FullRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// The pattern of a string match.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrMatcher {
    /// Equal.
    Exact(String),
    /// Starts with (raw string prefix).
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Whole-value RE2 regex.
    Regex(FullRegex),
    /// Any value, the empty one included. Not one of Envoy's string
    /// patterns: header and query matchers use it for `present_match`.
    Present,
}

impl StrMatcher {
    /// Compiles a config string match. `{}` becomes [`StrMatcher::Present`].
    pub fn compile(m: &crate::config::common::StringMatch) -> Result<Self, regex::Error> {
        use crate::config::common::StringMatchKind as K;
        Ok(match m.kind() {
            K::Exact(s) => StrMatcher::Exact(s.to_string()),
            K::Prefix(s) => StrMatcher::Prefix(s.to_string()),
            K::Regex(s) => StrMatcher::Regex(FullRegex::new(s)?),
            K::Present => StrMatcher::Present,
        })
    }

    /// True when `value` matches.
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(e) => value == e,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Suffix(s) => value.ends_with(s.as_str()),
            StrMatcher::Contains(c) => contains(value, c),
            StrMatcher::Regex(r) => r.is_match(value),
            StrMatcher::Present => true,
        }
    }

    /// Like [`StrMatcher::matches`] but exact, prefix, suffix and contains
    /// compare ASCII case-insensitively (regex unchanged, as Envoy).
    // Out of line: rare (`ignoreUriCase`, decoded `ignore_case`), and
    // inlined it keeps `StringMatcher::matches` out of the route loop.
    #[inline(never)]
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StrMatcher::Exact(e) => v.eq_ignore_ascii_case(e.as_bytes()),
            StrMatcher::Prefix(p) => v
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            StrMatcher::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .is_some_and(|i| v[i..].eq_ignore_ascii_case(s.as_bytes())),
            StrMatcher::Contains(c) => {
                c.is_empty()
                    || v.windows(c.len())
                        .any(|w| w.eq_ignore_ascii_case(c.as_bytes()))
            }
            other => other.matches(value),
        }
    }
}

// Out of line: substring search is a lot of code, and inlined it keeps
// `matches` from being inlined into the route loop (measured with
// benches/benches/route_match.rs: 1.4x -> 1.7x of the hand-written loop).
#[inline(never)]
fn contains(value: &str, needle: &str) -> bool {
    value.contains(needle)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Envoy's `StringMatcher`: a pattern and `ignore_case`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StringMatcher {
    /// The pattern.
    pub matcher: StrMatcher,
    /// ASCII case-insensitive (not applied to regex).
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_case: bool,
}

impl StringMatcher {
    /// A case-sensitive match.
    pub fn new(matcher: StrMatcher) -> Self {
        Self {
            matcher,
            ignore_case: false,
        }
    }

    /// An exact, case-sensitive match.
    pub fn exact(value: impl Into<String>) -> Self {
        Self::new(StrMatcher::Exact(value.into()))
    }

    /// True when `value` matches.
    #[inline(always)]
    pub fn matches(&self, value: &str) -> bool {
        if self.ignore_case {
            self.matcher.matches_ignore_case(value)
        } else {
            self.matcher.matches(value)
        }
    }
}

impl From<StrMatcher> for StringMatcher {
    fn from(m: StrMatcher) -> Self {
        Self::new(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_with_and_without_case() {
        let m = |p: StrMatcher, ic: bool| StringMatcher {
            matcher: p,
            ignore_case: ic,
        };
        let s = |v: &str| v.to_string();
        assert!(m(StrMatcher::Exact(s("Ab")), false).matches("Ab"));
        assert!(!m(StrMatcher::Exact(s("Ab")), false).matches("ab"));
        assert!(m(StrMatcher::Exact(s("Ab")), true).matches("aB"));
        assert!(m(StrMatcher::Prefix(s("/API")), true).matches("/api/v1"));
        assert!(!m(StrMatcher::Prefix(s("/API")), false).matches("/api/v1"));
        assert!(m(StrMatcher::Suffix(s(".COM")), true).matches("x.com"));
        assert!(!m(StrMatcher::Suffix(s(".COM")), true).matches("com"));
        assert!(m(StrMatcher::Contains(s("MID")), true).matches("a-mid-b"));
        assert!(!m(StrMatcher::Contains(s("MID")), false).matches("a-mid-b"));
        assert!(m(StrMatcher::Contains(s("")), true).matches(""));
        // Regex ignores ignore_case, as Envoy documents.
        let re = StrMatcher::Regex(FullRegex::new("a+").unwrap());
        assert!(!m(re.clone(), true).matches("A"));
        assert!(m(re.clone(), true).matches("aa"));
        assert!(!m(re, false).matches("aab"));
        assert!(m(StrMatcher::Present, false).matches(""));
    }
}
