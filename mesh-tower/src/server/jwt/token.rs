//! Where a rule looks for its token: headers (with a prefix), query
//! parameters and cookies, with Istio's default (`Authorization: Bearer`,
//! `access_token`) when a rule names no location.

use http::HeaderMap;
use mesh_core::config::security::request_authentication::JwtRule;

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A request header (lower-case name).
    Header(String),
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// The tokens a rule finds in a request, in the rule's order.
pub fn find(rule: &JwtRule, headers: &HeaderMap, query: Option<&str>) -> Vec<(String, Location)> {
    let mut out = Vec::new();
    for h in rule.effective_headers() {
        for v in headers.get_all(h.name.as_str()) {
            let Ok(v) = v.to_str() else { continue };
            let token = match h.prefix.as_deref() {
                Some(p) if !p.is_empty() => match v.get(..p.len()) {
                    Some(head) if head.eq_ignore_ascii_case(p) => &v[p.len()..],
                    _ => continue,
                },
                _ => v,
            };
            let token = token.trim();
            if !token.is_empty() {
                out.push((
                    token.to_string(),
                    Location::Header(h.name.to_ascii_lowercase()),
                ));
            }
        }
    }
    if let Some(q) = query {
        for name in rule.effective_params() {
            for pair in q.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if k == name && !v.is_empty() {
                        out.push((v.to_string(), Location::Param(name.clone())));
                    }
                }
            }
        }
    }
    if !rule.from_cookies.is_empty() {
        for v in headers.get_all(http::header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for c in v.split(';') {
                if let Some((k, val)) = c.trim().split_once('=') {
                    if rule.from_cookies.iter().any(|n| n == k) && !val.is_empty() {
                        out.push((val.to_string(), Location::Cookie(k.to_string())));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::config::security::request_authentication::JwtHeader;

    #[test]
    fn defaults_and_custom_locations() {
        let rule = JwtRule {
            issuer: "i".into(),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(
            find(&rule, &h, Some("x=1&access_token=def")),
            vec![
                ("abc".to_string(), Location::Header("authorization".into())),
                ("def".to_string(), Location::Param("access_token".into())),
            ]
        );
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(find(&rule, &h, None).is_empty());

        let rule = JwtRule {
            issuer: "i".into(),
            from_headers: vec![JwtHeader {
                name: "x-jwt".into(),
                prefix: None,
            }],
            from_cookies: vec!["session".into()],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert("x-jwt", "t1".parse().unwrap());
        h.insert("cookie", "a=b; session=t2".parse().unwrap());
        let found = find(&rule, &h, Some("access_token=ignored"));
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1],
            ("t2".to_string(), Location::Cookie("session".into()))
        );
    }
}
