//! Envoy's matcher messages <-> mesh-core's [`mesh_core::matcher`] types,
//! both ways, for every resource that carries them (routes, RBAC, CSDS).
//!
//! Decoding refuses what it cannot represent exactly (a `custom` string
//! matcher, a `range_match`) with an error naming the field, so a resource
//! is NACKed rather than matched with a different meaning.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher as EnvoyHeaderMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher as EnvoyStringMatcher,
};
use mesh_core::matcher::{FullRegex, HeaderMatcher, StrMatcher, StringMatcher};

/// A safe_regex message for `r`.
pub(crate) fn regex_matcher(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

/// A compiled whole-value regex, or why it does not compile.
pub(crate) fn full_regex(r: &str) -> Result<FullRegex, String> {
    FullRegex::new(r).map_err(|e| format!("regex {r:?} does not compile: {e}"))
}

/// Envoy's `StringMatcher` for `m`. [`StrMatcher::Present`] is not a string
/// pattern; callers that can say "present" do, others get `.*`.
pub fn encode_string(m: &StringMatcher) -> EnvoyStringMatcher {
    let pattern = match &m.matcher {
        StrMatcher::Exact(s) => MatchPattern::Exact(s.clone()),
        StrMatcher::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StrMatcher::Suffix(s) => MatchPattern::Suffix(s.clone()),
        StrMatcher::Contains(s) => MatchPattern::Contains(s.clone()),
        StrMatcher::Regex(r) => MatchPattern::SafeRegex(regex_matcher(r.as_str())),
        StrMatcher::Present => MatchPattern::SafeRegex(regex_matcher(".*")),
    };
    EnvoyStringMatcher {
        match_pattern: Some(pattern),
        ignore_case: m.ignore_case && !matches!(m.matcher, StrMatcher::Regex(_)),
    }
}

/// Envoy's `HeaderMatcher` for `h`.
pub fn encode_header(h: &HeaderMatcher) -> EnvoyHeaderMatcher {
    EnvoyHeaderMatcher {
        name: h.name.clone(),
        invert_match: h.invert,
        treat_missing_header_as_empty: h.treat_missing_as_empty,
        header_match_specifier: Some(match &h.value.matcher {
            StrMatcher::Present => HeaderMatchSpecifier::PresentMatch(true),
            _ => HeaderMatchSpecifier::StringMatch(encode_string(&h.value)),
        }),
    }
}

/// mesh-core's form of an Envoy `StringMatcher`, `ignore_case` honoured.
pub fn decode_string(m: &EnvoyStringMatcher) -> Result<StringMatcher, String> {
    let matcher = match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StrMatcher::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StrMatcher::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StrMatcher::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StrMatcher::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(r)) => StrMatcher::Regex(full_regex(&r.regex)?),
        Some(MatchPattern::Custom(c)) => {
            return Err(format!(
                "custom string matcher {:?} is not supported; use exact, prefix, suffix, contains or safe_regex",
                c.name
            ))
        }
        None => return Err("string matcher has no pattern".to_string()),
    };
    Ok(StringMatcher {
        matcher,
        ignore_case: m.ignore_case,
    })
}

/// mesh-core's form of an Envoy `HeaderMatcher`: every specifier, the
/// deprecated flat ones included, with `invert_match` and
/// `treat_missing_header_as_empty`. `present_match: false` is the inverted
/// `present_match: true` (the same result for a present and a missing
/// header). `range_match` is refused.
pub fn decode_header(h: &EnvoyHeaderMatcher) -> Result<HeaderMatcher, String> {
    let plain = |m| StringMatcher::new(m);
    let mut invert = h.invert_match;
    #[allow(deprecated)]
    let value = match &h.header_match_specifier {
        None | Some(HeaderMatchSpecifier::PresentMatch(true)) => plain(StrMatcher::Present),
        Some(HeaderMatchSpecifier::PresentMatch(false)) => {
            invert = !invert;
            plain(StrMatcher::Present)
        }
        Some(HeaderMatchSpecifier::StringMatch(m)) => {
            decode_string(m).map_err(|e| format!("header {}: {e}", h.name))?
        }
        Some(HeaderMatchSpecifier::ExactMatch(e)) => plain(StrMatcher::Exact(e.clone())),
        Some(HeaderMatchSpecifier::PrefixMatch(p)) => plain(StrMatcher::Prefix(p.clone())),
        Some(HeaderMatchSpecifier::SuffixMatch(p)) => plain(StrMatcher::Suffix(p.clone())),
        Some(HeaderMatchSpecifier::ContainsMatch(p)) => plain(StrMatcher::Contains(p.clone())),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => plain(StrMatcher::Regex(
            full_regex(&r.regex).map_err(|e| format!("header {}: {e}", h.name))?,
        )),
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(format!(
                "header {}: range_match is not supported; match the value with safe_regex",
                h.name
            ))
        }
    };
    Ok(HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        value,
        invert,
        treat_missing_as_empty: h.treat_missing_header_as_empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases = [
            StringMatcher::exact("a"),
            StringMatcher {
                matcher: StrMatcher::Suffix(".com".into()),
                ignore_case: true,
            },
            StringMatcher::new(StrMatcher::Contains("x".into())),
            StringMatcher::new(StrMatcher::Regex(FullRegex::new("a+").unwrap())),
        ];
        for m in cases {
            assert_eq!(decode_string(&encode_string(&m)).unwrap(), m);
            for h in [
                HeaderMatcher::new("x-a", m.clone()),
                HeaderMatcher::without("x-a", m.clone()),
            ] {
                assert_eq!(decode_header(&encode_header(&h)).unwrap(), h);
            }
        }
        let p = HeaderMatcher::without("x", StrMatcher::Present.into());
        assert_eq!(decode_header(&encode_header(&p)).unwrap(), p);
    }

    #[test]
    fn ignore_case_is_honoured() {
        let m = decode_string(&EnvoyStringMatcher {
            match_pattern: Some(MatchPattern::Exact("Yes".into())),
            ignore_case: true,
        })
        .unwrap();
        assert!(m.matches("yES"));
    }

    #[test]
    fn present_false_is_absent() {
        let h = decode_header(&EnvoyHeaderMatcher {
            name: "x".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(false)),
            ..Default::default()
        })
        .unwrap();
        assert!(h.matches_value(None));
        assert!(!h.matches_value(Some("v")));
    }
}
