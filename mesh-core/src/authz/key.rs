//! The attribute names a `when` condition may use (Istio's "Authorization
//! Policy Conditions"), parsed once so validation and the engine agree.

use super::matcher::parse_ip_block;

/// A parsed `when.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[<name>]`; the name is stored lower-case (header names
    /// are compared case-insensitively). HTTP only.
    RequestHeader(String),
    /// `source.ip`: the direct peer address. IP or CIDR values.
    SourceIp,
    /// `remote.ip`: the original client address (X-Forwarded-For or PROXY
    /// protocol). IP or CIDR values.
    RemoteIp,
    /// `source.namespace`: namespace of the mTLS peer.
    SourceNamespace,
    /// `source.principal`: identity of the mTLS peer.
    SourcePrincipal,
    /// `request.auth.principal`: JWT `<iss>/<sub>`. HTTP only.
    RequestPrincipal,
    /// `request.auth.audiences`: JWT `aud`. HTTP only.
    Audiences,
    /// `request.auth.presenter`: JWT `azp`. HTTP only.
    Presenter,
    /// `request.auth.claims[a][b]...`: a (nested) JWT claim. HTTP only.
    Claim(Vec<String>),
    /// `destination.ip`: the address the connection was made to.
    DestinationIp,
    /// `destination.port`: the port the connection was made to.
    DestinationPort,
    /// `connection.sni`: TLS server name of the connection.
    Sni,
    /// `experimental.envoy.filters.*[...]`: Envoy filter metadata. The mesh
    /// has no such filters, so this attribute is always absent.
    FilterMetadata(String),
}

const KNOWN: &str = "request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni, experimental.envoy.filters.*";

impl ConditionKey {
    /// Parses a key, or says what is wrong and which keys exist.
    pub fn parse(key: &str) -> Result<Self, String> {
        let simple = match key {
            "source.ip" => Some(Self::SourceIp),
            "remote.ip" => Some(Self::RemoteIp),
            "source.namespace" => Some(Self::SourceNamespace),
            "source.principal" => Some(Self::SourcePrincipal),
            "request.auth.principal" => Some(Self::RequestPrincipal),
            "request.auth.audiences" => Some(Self::Audiences),
            "request.auth.presenter" => Some(Self::Presenter),
            "destination.ip" => Some(Self::DestinationIp),
            "destination.port" => Some(Self::DestinationPort),
            "connection.sni" => Some(Self::Sni),
            _ => None,
        };
        if let Some(k) = simple {
            return Ok(k);
        }
        if let Some(rest) = key.strip_prefix("request.headers") {
            let name = rest
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
                .ok_or_else(|| {
                    format!("{key:?}: write the header name in brackets, e.g. request.headers[x-user-id]")
                })?;
            return Ok(Self::RequestHeader(name.to_ascii_lowercase()));
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims") {
            return parse_claim_path(rest)
                .map(Self::Claim)
                .ok_or_else(|| format!("{key:?}: write the claim name in brackets, nested claims as request.auth.claims[outer][inner]"));
        }
        if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
            if rest.is_empty() {
                return Err(format!("{key:?}: name the filter and the metadata key, e.g. experimental.envoy.filters.network.mysql_proxy[db.table]"));
            }
            return Ok(Self::FilterMetadata(rest.to_string()));
        }
        Err(format!(
            "unknown condition key {key:?}; supported keys are {KNOWN}"
        ))
    }

    /// True when the attribute exists only on HTTP requests.
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            Self::RequestHeader(_)
                | Self::RequestPrincipal
                | Self::Audiences
                | Self::Presenter
                | Self::Claim(_)
        )
    }

    /// Checks one value for this key.
    pub fn check_value(&self, value: &str) -> Result<(), String> {
        match self {
            Self::SourceIp | Self::RemoteIp | Self::DestinationIp
                if parse_ip_block(value).is_none() =>
            {
                return Err(format!(
                    "{value:?} is neither an IP address nor a CIDR; write e.g. 10.1.2.3 or 10.1.0.0/16"
                ));
            }
            Self::DestinationPort if value.parse::<u16>().is_err() => {
                return Err(format!(
                    "{value:?} is not a port number; write a number from 0 to 65535"
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Parses `[a][b]...` into `["a", "b"]`.
fn parse_claim_path(mut rest: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        out.push(name.to_string());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        assert_eq!(
            ConditionKey::parse("request.headers[X-Token]"),
            Ok(ConditionKey::RequestHeader("x-token".into()))
        );
        assert_eq!(
            ConditionKey::parse("request.auth.claims[groups]"),
            Ok(ConditionKey::Claim(vec!["groups".into()]))
        );
        assert_eq!(
            ConditionKey::parse("request.auth.claims[a][b]"),
            Ok(ConditionKey::Claim(vec!["a".into(), "b".into()]))
        );
        for k in [
            "source.ip",
            "remote.ip",
            "source.namespace",
            "source.principal",
            "request.auth.principal",
            "request.auth.audiences",
            "request.auth.presenter",
            "destination.ip",
            "destination.port",
            "connection.sni",
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
        ] {
            assert!(ConditionKey::parse(k).is_ok(), "{k}");
        }
        for bad in [
            "request.headers",
            "request.headers[]",
            "request.auth.claims",
            "request.auth.claims[]",
            "request.auth.claims[a",
            "request.auth.claims[a]x",
            "source.user",
            "destination.labels[app]",
        ] {
            assert!(ConditionKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_only_keys() {
        assert!(ConditionKey::parse("request.headers[a]")
            .unwrap()
            .http_only());
        assert!(!ConditionKey::parse("source.ip").unwrap().http_only());
        assert!(!ConditionKey::parse("connection.sni").unwrap().http_only());
    }
}
