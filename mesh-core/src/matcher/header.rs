//! Envoy's `HeaderMatcher`, and the header view every matcher reads.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::string::{StrMatcher, StringMatcher};

/// Request headers as matchers read them. Names compare
/// case-insensitively; a repeated header reads as its values joined with
/// `,`, as Envoy's header matchers see it.
pub trait HeaderSource {
    /// The value of header `name` (given in lowercase); `None` when absent.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// An empty header set.
pub const NO_HEADERS: [(&str, &str); 0] = [];

/// Joins the values yielded by `it` with `,`; borrows when there is one.
pub fn join_values<'a>(mut it: impl Iterator<Item = &'a str>) -> Option<Cow<'a, str>> {
    let first = it.next()?;
    let Some(second) = it.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut s = format!("{first},{second}");
    for v in it {
        s.push(',');
        s.push_str(v);
    }
    Some(Cow::Owned(s))
}

fn pairs<'a, K: AsRef<str> + 'a, V: AsRef<str> + 'a>(
    items: impl Iterator<Item = (&'a K, &'a V)>,
    name: &str,
) -> Option<Cow<'a, str>> {
    join_values(
        items
            .filter(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref()),
    )
}

impl<const N: usize> HeaderSource for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        pairs(self.iter().map(|(k, v)| (k, v)), name)
    }
}

impl HeaderSource for Vec<(&str, &str)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        pairs(self.iter().map(|(k, v)| (k, v)), name)
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        pairs(self.iter().map(|(k, v)| (k, v)), name)
    }
}

impl HeaderSource for BTreeMap<String, String> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        pairs(self.iter(), name)
    }
}

impl HeaderSource for HashMap<String, String> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        pairs(self.iter(), name)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Envoy's `HeaderMatcher`.
///
/// A missing header matches only an inverted "present" match, unless
/// `treat_missing_as_empty` is set: then it reads as the empty value. This
/// is how Istio's `withoutHeaders` is meant (istiod sets
/// `treat_missing_header_as_empty` on every inverted value match), so a
/// request that lacks the header matches `withoutHeaders` whatever the
/// value pattern, unless the pattern matches the empty value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderMatcher {
    /// Lowercase header name; pseudo-headers (`:authority`, `:method`,
    /// `:path`, `:scheme`) included.
    pub name: String,
    /// The value match ([`StrMatcher::Present`] for `present_match`).
    #[serde(flatten)]
    pub value: StringMatcher,
    /// `invert_match`.
    #[serde(skip_serializing_if = "is_false")]
    pub invert: bool,
    /// `treat_missing_header_as_empty`.
    #[serde(skip_serializing_if = "is_false")]
    pub treat_missing_as_empty: bool,
}

impl HeaderMatcher {
    /// A plain (not inverted) match, as Istio's `headers` are.
    pub fn new(name: &str, value: StringMatcher) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            value,
            invert: false,
            treat_missing_as_empty: false,
        }
    }

    /// Istio's `withoutHeaders` entry: inverted, and a missing header reads
    /// as empty unless the match is "present" (istiod's translation).
    pub fn without(name: &str, value: StringMatcher) -> Self {
        let present = value.matcher == StrMatcher::Present;
        Self {
            name: name.to_ascii_lowercase(),
            value,
            invert: true,
            treat_missing_as_empty: !present,
        }
    }

    /// Evaluates against the header's value (`None` when absent).
    #[inline]
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let v = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => "",
            None => return self.invert && self.value.matcher == StrMatcher::Present,
        };
        self.value.matches(v) != self.invert
    }

    /// Evaluates against a header set.
    #[inline]
    pub fn matches(&self, headers: &dyn HeaderSource) -> bool {
        self.matches_value(headers.header(&self.name).as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::FullRegex;

    fn exact(v: &str) -> StringMatcher {
        StringMatcher::exact(v)
    }

    #[test]
    fn missing_header_rules_as_envoy() {
        // Plain matches never match a missing header, "present" included.
        assert!(!HeaderMatcher::new("x", exact("")).matches_value(None));
        assert!(!HeaderMatcher::new("x", StrMatcher::Present.into()).matches_value(None));
        // Istio's withoutHeaders: a missing header matches, whatever the
        // value pattern, unless the pattern matches the empty value.
        for m in [
            exact("a"),
            StrMatcher::Prefix("a".into()).into(),
            StrMatcher::Regex(FullRegex::new("a.*").unwrap()).into(),
            StrMatcher::Present.into(),
        ] {
            assert!(
                HeaderMatcher::without("x", m.clone()).matches_value(None),
                "{m:?}"
            );
        }
        assert!(!HeaderMatcher::without("x", exact("")).matches_value(None));
        let any = StrMatcher::Regex(FullRegex::new(".*").unwrap());
        assert!(!HeaderMatcher::without("x", any.into()).matches_value(None));
        // Raw Envoy: inverted value match without treat_missing: no match.
        let raw = HeaderMatcher {
            treat_missing_as_empty: false,
            ..HeaderMatcher::without("x", exact("a"))
        };
        assert!(!raw.matches_value(None));
        // Present header: inverted as expected.
        assert!(!HeaderMatcher::without("x", exact("a")).matches_value(Some("a")));
        assert!(HeaderMatcher::without("x", exact("a")).matches_value(Some("b")));
        assert!(!HeaderMatcher::without("x", StrMatcher::Present.into()).matches_value(Some("")));
    }

    #[test]
    fn repeated_headers_join_and_names_ignore_case() {
        let h = vec![("X-A", "1"), ("x-a", "2"), ("b", "3")];
        assert_eq!(h.header("x-a").as_deref(), Some("1,2"));
        assert!(HeaderMatcher::new("X-A", exact("1,2")).matches(&h));
        assert!(!HeaderMatcher::new("x-a", exact("1")).matches(&h));
    }

    #[test]
    fn ignore_case_values() {
        let m = HeaderMatcher::new(
            "x",
            StringMatcher {
                matcher: StrMatcher::Exact("Yes".into()),
                ignore_case: true,
            },
        );
        assert!(m.matches_value(Some("YES")));
        assert!(!HeaderMatcher::new("x", exact("Yes")).matches_value(Some("YES")));
    }
}
