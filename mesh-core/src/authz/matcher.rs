//! Value matchers of an AuthorizationPolicy, built once at compile time.
//!
//! Istio's string rule applies to every string field: `*` alone matches any
//! non-empty value, a leading `*` is a suffix match, a trailing `*` a prefix
//! match, anything else is exact (a `*` in the middle is a literal). Paths
//! additionally accept templates with `{*}` (exactly one segment) and `{**}`
//! (the rest of the path, possibly empty; it must be the last operator).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::matcher::FullRegex;

/// Istio's string match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    /// The value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The value ends with this.
    Suffix(String),
    /// The value is present and not empty.
    Present,
}

impl StrMatch {
    /// Parses a value as written in a policy.
    pub fn parse(value: &str) -> Self {
        if value == "*" {
            Self::Present
        } else if let Some(s) = value.strip_prefix('*') {
            Self::Suffix(s.to_string())
        } else if let Some(p) = value.strip_suffix('*') {
            Self::Prefix(p.to_string())
        } else {
            Self::Exact(value.to_string())
        }
    }

    /// Case-sensitive match.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => v == e,
            Self::Prefix(p) => v.starts_with(p.as_str()),
            Self::Suffix(s) => v.ends_with(s.as_str()),
            Self::Present => !v.is_empty(),
        }
    }

    /// ASCII case-insensitive match (hosts).
    pub fn matches_ignore_case(&self, v: &str) -> bool {
        let (v, n) = (v.as_bytes(), |s: &String| s.len());
        match self {
            Self::Exact(e) => v.eq_ignore_ascii_case(e.as_bytes()),
            Self::Prefix(p) => v.len() >= n(p) && v[..n(p)].eq_ignore_ascii_case(p.as_bytes()),
            Self::Suffix(s) => {
                v.len() >= n(s) && v[v.len() - n(s)..].eq_ignore_ascii_case(s.as_bytes())
            }
            Self::Present => !v.is_empty(),
        }
    }
}

/// A `paths`/`notPaths` entry.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Exact, prefix, suffix or presence.
    Str(StrMatch),
    /// A `{*}`/`{**}` template, compiled to a whole-path regex (the same
    /// RE2 pattern Envoy's `url_path` `safe_regex` is sent).
    Template(FullRegex),
}

impl PathMatch {
    /// Compiles a path value; a malformed template is an error.
    pub fn parse(value: &str) -> Result<Self, String> {
        if !is_template(value) {
            return Ok(Self::Str(StrMatch::parse(value)));
        }
        check_path_template(value)?;
        let mut re = String::new();
        for (i, seg) in value.split('/').enumerate() {
            if i > 0 {
                re.push('/');
            }
            match seg {
                "{*}" => re.push_str("[^/]+"),
                "{**}" => re.push_str(".*"),
                lit => re.push_str(&regex::escape(lit)),
            }
        }
        FullRegex::new(&re)
            .map(Self::Template)
            .map_err(|e| format!("path template {value:?} did not compile: {e}"))
    }

    /// Matches a normalized path (without query).
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Str(s) => s.matches(path),
            Self::Template(re) => re.is_match(path),
        }
    }
}

fn is_template(value: &str) -> bool {
    value.contains('{') || value.contains('}')
}

/// Istio's path template rules: `{*}` and `{**}` must each be a whole path
/// segment, `{**}` must be the last operator, and no other braces may appear.
/// Values without braces are always accepted.
pub fn check_path_template(value: &str) -> Result<(), String> {
    if !is_template(value) {
        return Ok(());
    }
    if !value.starts_with('/') {
        return Err(format!(
            "path template {value:?} must start with /, e.g. /api/{{*}}/items"
        ));
    }
    let mut seen_any = false;
    for seg in value.trim_matches('/').split('/') {
        if seen_any {
            return Err(format!(
                "path template {value:?}: {{**}} must be the last operator (found {seg:?} after it); use {{*}} for single segments before it"
            ));
        }
        match seg {
            "{*}" => {}
            "{**}" => seen_any = true,
            s if s.contains(['{', '}']) => {
                return Err(format!(
                    "path template {value:?}: segment {s:?} is not supported; {{*}} and {{**}} must each be a whole path segment, with no other braces or wildcards"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a single IP (as a host-length network) or a CIDR.
pub fn parse_ip_block(value: &str) -> Option<IpNet> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Some(net);
    }
    value.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_string_rules() {
        let m = StrMatch::parse;
        assert!(m("abc").matches("abc"));
        assert!(!m("abc").matches("abcd"));
        assert!(m("abc*").matches("abc"));
        assert!(m("abc*").matches("abcd"));
        assert!(!m("abc*").matches("xabc"));
        assert!(m("*abc").matches("abc"));
        assert!(m("*abc").matches("xabc"));
        assert!(!m("*abc").matches("abcx"));
        assert!(m("*").matches("x"));
        assert!(!m("*").matches(""));
        // A star in the middle is literal.
        assert!(m("a*c").matches("a*c"));
        assert!(!m("a*c").matches("abc"));
    }

    #[test]
    fn case_insensitive_hosts() {
        let m = StrMatch::parse;
        assert!(m("Example.COM").matches_ignore_case("example.com"));
        assert!(m("*.example.com").matches_ignore_case("API.Example.Com"));
        assert!(m("api.*").matches_ignore_case("API.example.com"));
        assert!(!m("*.example.com").matches_ignore_case("example.org"));
        assert!(!m("api.*").matches_ignore_case("ap"));
    }

    #[test]
    fn templates() {
        let t = |p: &str| PathMatch::parse(p).unwrap();
        let one = t("/api/{*}/items");
        assert!(one.matches("/api/v1/items"));
        assert!(!one.matches("/api/v1/v2/items"));
        assert!(!one.matches("/api//items"));
        let rest = t("/api/{*}/files/{**}");
        assert!(rest.matches("/api/u1/files/"));
        assert!(rest.matches("/api/u1/files/a/b/c.txt"));
        assert!(!rest.matches("/api/u1/files"));
        assert!(!rest.matches("/api/u1/other/a"));
        // Regex metacharacters in literals are literal.
        let lit = t("/a.b/{*}");
        assert!(lit.matches("/a.b/x"));
        assert!(!lit.matches("/aXb/x"));
        assert!(PathMatch::parse("/a/{**}/b").is_err());
        assert!(PathMatch::parse("/a/b{*}").is_err());
        assert!(PathMatch::parse("/a/{x}").is_err());
    }

    #[test]
    fn ip_blocks() {
        assert!(parse_ip_block("10.0.0.0/8").is_some());
        assert!(parse_ip_block("10.1.2.3").is_some());
        assert!(parse_ip_block("2001:db8::/32").is_some());
        assert!(parse_ip_block("10.0.0.0/40").is_none());
        assert!(parse_ip_block("host").is_none());
        let net = parse_ip_block("10.1.2.3").unwrap();
        assert!(net.contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(!net.contains(&"10.1.2.4".parse::<IpAddr>().unwrap()));
    }
}
