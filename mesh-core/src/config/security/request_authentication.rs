//! Istio `RequestAuthentication` (security.istio.io): which JWTs a workload
//! accepts, where to find them and what to do with their claims.
//!
//! Serde types and Istio's validation only. Token verification and the
//! selection of policies per workload live elsewhere (the JWT layer and the
//! compiler).

use serde::{Deserialize, Serialize};

use crate::config::common::{check_targeting, Duration, PolicyTargetReference, WorkloadSelector};
use crate::config::validate::{each, field, Issues, Validate};

/// The `spec` of a RequestAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// Workloads the policy applies to; unset means the whole namespace (or
    /// mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource (typically a Gateway) the policy attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to, instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The JWTs accepted by the selected workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// Istio's `JWTRule`: one accepted issuer and how to read and check its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Required `iss` claim of the token.
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values; empty accepts the service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the issuer's JSON Web Key Set. Exclusive with `jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "jwks_uri")]
    pub jwks_uri: Option<String>,
    /// Inline JSON Web Key Set. Exclusive with `jwksUri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers the token may be read from; default `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token may be read from; default `access_token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Header that receives the verified payload (base64 of the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Cookies the token may be read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Keep the original token on the request forwarded upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims copied into request headers after verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long to wait for the JWKS fetch (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// What a missing or invalid token means (default `PERMISSIVE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<JwtFailureMode>,
}

/// Istio's `JWTHeader`: a header carrying the token, with an optional prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name (required).
    #[serde(default)]
    pub name: String,
    /// Prefix stripped before decoding, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Istio's `ClaimToHeader`: copy one claim into one request header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header to set (overwrites an existing one).
    #[serde(default)]
    pub header: String,
    /// Claim to copy; nested claims use `.` (`nested.key.group`).
    #[serde(default)]
    pub claim: String,
}

/// Istio's `JWTRule.FailureMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtFailureMode {
    /// A missing token passes; a present but invalid token is rejected.
    #[default]
    Permissive,
    /// Missing or invalid tokens never fail the request.
    Ignore,
    /// A valid token is required.
    Strict,
}

impl JwtRule {
    /// The headers the token is read from, with Istio's default
    /// (`Authorization` with prefix `"Bearer "`) when no location is given.
    pub fn effective_headers(&self) -> Vec<JwtHeader> {
        if self.from_headers.is_empty()
            && self.from_params.is_empty()
            && self.from_cookies.is_empty()
        {
            vec![JwtHeader {
                name: "Authorization".to_string(),
                prefix: Some("Bearer ".to_string()),
            }]
        } else {
            self.from_headers.clone()
        }
    }

    /// The query parameters the token is read from, with Istio's default
    /// (`access_token`) when no location is given.
    pub fn effective_params(&self) -> Vec<String> {
        if self.from_headers.is_empty()
            && self.from_params.is_empty()
            && self.from_cookies.is_empty()
        {
            vec!["access_token".to_string()]
        } else {
            self.from_params.clone()
        }
    }
}

impl Validate for RequestAuthentication {
    fn validate(&self, path: &str, issues: &mut Issues) {
        check_targeting(
            path,
            &self.selector,
            &self.target_ref,
            &self.target_refs,
            issues,
        );
        each(&self.jwt_rules, &field(path, "jwtRules"), issues);
    }
}

impl Validate for JwtRule {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.issuer.trim().is_empty() {
            issues.push(
                field(path, "issuer"),
                "issuer is required; set it to the token's `iss` claim, e.g. https://accounts.example.com",
            );
        }
        for (i, aud) in self.audiences.iter().enumerate() {
            if aud.is_empty() {
                issues.push(
                    format!("{}[{i}]", field(path, "audiences")),
                    "audience must be a non-empty string; remove the empty entry",
                );
            }
        }
        if self.jwks_uri.is_some() && self.jwks.is_some() {
            issues.push(
                path,
                "jwksUri and jwks are mutually exclusive; keep jwksUri to fetch the keys, or jwks to inline them",
            );
        }
        if let Some(uri) = &self.jwks_uri {
            if let Err(why) = check_jwks_uri(uri) {
                issues.push(
                    field(path, "jwksUri"),
                    format!("invalid jwksUri {uri:?}: {why}; expected an http(s) URL such as https://example.com/.well-known/jwks.json"),
                );
            }
        }
        if let Some(jwks) = &self.jwks {
            if let Err(why) = check_jwks(jwks) {
                issues.push(
                    field(path, "jwks"),
                    format!("invalid jwks: {why}; expected a JSON Web Key Set like {{\"keys\": [{{\"kty\": \"RSA\", ...}}]}}"),
                );
            }
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            let p = format!("{}[{i}].name", field(path, "fromHeaders"));
            if h.name.is_empty() {
                issues.push(
                    p,
                    "fromHeaders name is required; name the header that carries the token",
                );
            } else if let Err(why) = check_header_name(&h.name) {
                issues.push(p, why);
            }
        }
        for (i, q) in self.from_params.iter().enumerate() {
            if q.is_empty() {
                issues.push(
                    format!("{}[{i}]", field(path, "fromParams")),
                    "query parameter name must be a non-empty string",
                );
            }
        }
        for (i, c) in self.from_cookies.iter().enumerate() {
            if c.is_empty() {
                issues.push(
                    format!("{}[{i}]", field(path, "fromCookies")),
                    "cookie name must be a non-empty string",
                );
            }
        }
        if let Some(h) = &self.output_payload_to_header {
            if let Err(why) = check_header_name(h) {
                issues.push(field(path, "outputPayloadToHeader"), why);
            }
        }
        let octh = field(path, "outputClaimToHeaders");
        let mut seen: Vec<String> = Vec::new();
        for (i, c) in self.output_claim_to_headers.iter().enumerate() {
            let p = format!("{octh}[{i}]");
            if c.header.is_empty() {
                issues.push(
                    field(&p, "header"),
                    "header is required; name the header that receives the claim",
                );
            } else if let Err(why) = check_header_name(&c.header) {
                issues.push(field(&p, "header"), why);
            } else {
                let lower = c.header.to_ascii_lowercase();
                if seen.contains(&lower) {
                    issues.push(
                        field(&p, "header"),
                        format!("header {:?} is already used by an earlier outputClaimToHeaders entry; each header must be unique", c.header),
                    );
                }
                seen.push(lower);
            }
            if c.claim.is_empty() {
                issues.push(
                    field(&p, "claim"),
                    "claim is required; name the claim to copy (nested claims use `.`)",
                );
            }
        }
        if let Some(t) = self.timeout {
            t.check_ms(&field(path, "timeout"), issues);
        }
    }
}

/// Checks a JWKS URI the way Istio does: an absolute http or https URL with a
/// host.
fn check_jwks_uri(uri: &str) -> Result<(), &'static str> {
    let lower = uri.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("https://") {
        r
    } else if let Some(r) = lower.strip_prefix("http://") {
        r
    } else {
        return Err("the scheme must be http or https");
    };
    if uri.chars().any(char::is_whitespace) {
        return Err("it contains whitespace");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("the IPv6 address is missing its closing ']'")?;
        (h, after.strip_prefix(':'))
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        if p.parse::<u16>().is_err() {
            return Err("the port is not a number from 0 to 65535");
        }
    }
    Ok(())
}

/// Checks an inline JWKS is a JSON object with a `keys` array of objects.
fn check_jwks(jwks: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("it is not valid JSON ({e})"))?;
    match v.get("keys") {
        Some(serde_json::Value::Array(keys)) => {
            if keys.iter().all(|k| k.get("kty").is_some()) {
                Ok(())
            } else {
                Err("every key must be an object with a `kty` field".to_string())
            }
        }
        _ => Err("it has no `keys` array".to_string()),
    }
}

/// Checks an HTTP header name: an RFC 7230 token, and not an HTTP/2
/// pseudo-header.
pub(crate) fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name must not be empty".to_string());
    }
    if name.starts_with(':') {
        return Err(format!(
            "{name:?} is an HTTP/2 pseudo-header, which cannot be set here; use a regular header name such as x-jwt-claim"
        ));
    }
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if let Some(bad) = name.chars().find(|c| !is_tchar(*c)) {
        return Err(format!(
            "header name {name:?} contains {bad:?}, which is not allowed in a header name; use letters, digits and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> RequestAuthentication {
        serde_json::from_value(v).unwrap()
    }

    fn errors(ra: &RequestAuthentication) -> Vec<(String, String)> {
        let mut issues = Issues::new();
        ra.validate("spec", &mut issues);
        issues
            .errors()
            .iter()
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect()
    }

    fn paths(ra: &RequestAuthentication) -> Vec<String> {
        errors(ra).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn parses_every_field() {
        let ra = parse(json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "jwtRules": [{
                "issuer": "testing@secure.istio.io",
                "audiences": ["bookstore_android.apps.example.com"],
                "jwksUri": "https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json",
                "fromHeaders": [{"name": "x-jwt-assertion", "prefix": "Bearer "}],
                "fromParams": ["my_token"],
                "fromCookies": ["auth-token"],
                "outputPayloadToHeader": "x-jwt-payload",
                "forwardOriginalToken": true,
                "outputClaimToHeaders": [{"header": "x-jwt-claim-foo", "claim": "foo"}],
                "timeout": "10s",
                "failureMode": "STRICT"
            }]
        }));
        let r = &ra.jwt_rules[0];
        assert_eq!(r.from_headers[0].prefix.as_deref(), Some("Bearer "));
        assert_eq!(r.timeout, Some(Duration::from_secs(10)));
        assert_eq!(r.failure_mode, Some(JwtFailureMode::Strict));
        assert_eq!(r.forward_original_token, Some(true));
        assert!(errors(&ra).is_empty(), "{:?}", errors(&ra));
        assert_eq!(parse(serde_json::to_value(&ra).unwrap()), ra);
    }

    #[test]
    fn accepts_snake_case_jwks_uri_alias() {
        let ra = parse(json!({"jwtRules": [{"issuer": "a", "jwks_uri": "http://x/jwks"}]}));
        assert_eq!(ra.jwt_rules[0].jwks_uri.as_deref(), Some("http://x/jwks"));
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(serde_json::from_value::<RequestAuthentication>(json!({"jwtRule": []})).is_err());
        assert!(serde_json::from_value::<RequestAuthentication>(
            json!({"jwtRules": [{"issuer": "a", "jwksURI": "x"}]})
        )
        .is_err());
        assert!(serde_json::from_value::<RequestAuthentication>(
            json!({"jwtRules": [{"issuer": "a", "fromHeaders": [{"nme": "x"}]}]})
        )
        .is_err());
    }

    #[test]
    fn default_token_locations() {
        let r = JwtRule {
            issuer: "a".into(),
            ..JwtRule::default()
        };
        assert_eq!(r.effective_headers()[0].name, "Authorization");
        assert_eq!(r.effective_params(), vec!["access_token".to_string()]);
        let r = JwtRule {
            from_cookies: vec!["c".into()],
            ..r
        };
        assert!(r.effective_headers().is_empty());
        assert!(r.effective_params().is_empty());
    }

    #[test]
    fn issuer_required() {
        let ra = parse(json!({"jwtRules": [{"jwksUri": "https://example.com/jwks"}]}));
        let e = errors(&ra);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "spec.jwtRules[0].issuer");
        assert!(e[0].1.contains("iss"));
    }

    #[test]
    fn jwks_and_uri_exclusive_and_checked() {
        let ra = parse(json!({"jwtRules": [
            {"issuer": "a", "jwksUri": "https://e.com/k", "jwks": "{\"keys\": []}"},
            {"issuer": "b", "jwksUri": "ftp://e.com/k"},
            {"issuer": "c", "jwksUri": "https:///k"},
            {"issuer": "d", "jwks": "not json"},
            {"issuer": "e", "jwks": "{\"foo\": 1}"},
            {"issuer": "f", "jwksUri": "http://localhost:8080/jwks"},
            {"issuer": "g", "jwks": "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"x\", \"e\": \"AQAB\"}]}"}
        ]}));
        assert_eq!(
            paths(&ra),
            vec![
                "spec.jwtRules[0]",
                "spec.jwtRules[1].jwksUri",
                "spec.jwtRules[2].jwksUri",
                "spec.jwtRules[3].jwks",
                "spec.jwtRules[4].jwks",
            ]
        );
    }

    #[test]
    fn header_rules() {
        let ra = parse(json!({"jwtRules": [{
            "issuer": "a",
            "fromHeaders": [{"name": ""}, {"name": "x-token"}],
            "fromParams": [""],
            "fromCookies": [""],
            "audiences": [""],
            "outputClaimToHeaders": [
                {"header": ":path", "claim": "sub"},
                {"header": "x bad", "claim": "sub"},
                {"header": "x-sub", "claim": ""},
                {"header": "X-Sub", "claim": "sub"},
                {"header": "", "claim": "sub"}
            ]
        }]}));
        assert_eq!(
            paths(&ra),
            vec![
                "spec.jwtRules[0].audiences[0]",
                "spec.jwtRules[0].fromHeaders[0].name",
                "spec.jwtRules[0].fromParams[0]",
                "spec.jwtRules[0].fromCookies[0]",
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
                "spec.jwtRules[0].outputClaimToHeaders[1].header",
                "spec.jwtRules[0].outputClaimToHeaders[2].claim",
                "spec.jwtRules[0].outputClaimToHeaders[3].header",
                "spec.jwtRules[0].outputClaimToHeaders[4].header",
            ]
        );
        let msgs = errors(&ra);
        assert!(msgs[4].1.contains("pseudo-header"));
        assert!(msgs[7].1.contains("unique"));
    }

    #[test]
    fn selector_and_target_refs_exclusive() {
        let ra = parse(json!({
            "selector": {"matchLabels": {"app": "a"}},
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]
        }));
        assert_eq!(paths(&ra), vec!["spec"]);
        let ra = parse(json!({
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
        }));
        assert!(paths(&ra).is_empty());
        let ra = parse(json!({"targetRefs": [{"kind": "Pod", "name": "x"}]}));
        assert_eq!(paths(&ra), vec!["spec.targetRefs[0].kind"]);
    }

    #[test]
    fn timeout_checked() {
        let ra = parse(json!({"jwtRules": [{"issuer": "a", "timeout": "500us"}]}));
        assert_eq!(paths(&ra), vec!["spec.jwtRules[0].timeout"]);
    }
}
