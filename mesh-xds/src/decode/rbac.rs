//! Server listeners' RBAC filters -> mesh-core's [`mesh_core::rbac`], for
//! an SDK server fed by a control plane that does not send our compiled
//! policy (istiod or any Envoy v3 server).
//!
//! Fail closed: anything that could change what a listener allows and that
//! is not understood exactly (a filter of unknown type that is not
//! optional, a filter-state or sourced-metadata matcher, RBAC's CEL
//! `matcher` API, per-route overrides, chains that disagree) is an error;
//! the caller then denies the port ([`mesh_core::authz::PortRbac::Deny`]).
//! A metadata matcher is understood: nothing in an accepted chain writes
//! metadata, so it reads as absent.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter as NetworkFilter, Listener};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action as EnvoyAction, Permission as EnvoyPermission,
    Policy as EnvoyPolicy, Principal as EnvoyPrincipal, Rbac as EnvoyRbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{path_matcher, PathMatcher};
use envoy_types::pb::google::protobuf::Any;
use ipnet::IpNet;
use mesh_core::authz::matcher::PathMatch;
use mesh_core::matcher::{StrMatcher, StringMatcher};
use mesh_core::rbac::{Action, Filter, Permission, Policy, Principal, Rbac};
use prost::Name;

use crate::matcher::{decode_header, decode_string};
use crate::types::unany;

/// The RBAC filters every filter chain of a server listener applies, in
/// chain order; an error says what could not be understood.
pub fn listener_rbac(l: &Listener) -> Result<Vec<Filter>, String> {
    let mut agreed: Option<Vec<Filter>> = None;
    for chain in &l.filter_chains {
        let filters = chain_rbac(&chain.filters)
            .map_err(|e| format!("filter chain {:?}: {e}", chain.name))?;
        match &agreed {
            None => agreed = Some(filters),
            Some(a) if *a == filters => {}
            Some(_) => {
                return Err(format!(
                    "filter chain {:?} has other RBAC filters than the first chain; the SDK serves one policy per port",
                    chain.name
                ))
            }
        }
    }
    // `default_filter_chain` serves connections no chain matches.
    if let Some(chain) = &l.default_filter_chain {
        let filters =
            chain_rbac(&chain.filters).map_err(|e| format!("default filter chain: {e}"))?;
        if agreed.as_ref().is_some_and(|a| *a != filters) {
            return Err("the default filter chain has other RBAC filters than the others".into());
        }
        agreed.get_or_insert(filters);
    }
    agreed.ok_or_else(|| "no filter chain".to_string())
}

fn typed<'a>(name: &str, config: Option<&'a filter::ConfigType>) -> Result<&'a Any, String> {
    match config {
        Some(filter::ConfigType::TypedConfig(a)) => Ok(a),
        _ => Err(format!(
            "network filter {name:?} has no typed_config (config discovery is not supported)"
        )),
    }
}

fn chain_rbac(filters: &[NetworkFilter]) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    for f in filters {
        let a = typed(&f.name, f.config_type.as_ref())?;
        if let Some(hcm) = unany::<HttpConnectionManager>(a) {
            out.extend(hcm_rbac(&hcm)?);
        } else if let Some(r) = unany::<NetworkRbac>(a) {
            if r.matcher.is_some() || r.shadow_matcher.is_some() {
                return Err(format!(
                    "network RBAC filter {:?} uses the matcher API",
                    f.name
                ));
            }
            out.push(filter(&f.name, r.rules.as_ref(), r.shadow_rules.as_ref())?);
        } else if unany::<TcpProxy>(a).is_some() {
            // Terminal: forwards; what matters came before it.
        } else {
            return Err(format!(
                "network filter {:?} of type {} is not understood",
                f.name, a.type_url
            ));
        }
    }
    Ok(out)
}

fn hcm_rbac(hcm: &HttpConnectionManager) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    for f in &hcm.http_filters {
        let a = match &f.config_type {
            Some(ConfigType::TypedConfig(a)) => a,
            _ if f.is_optional => continue,
            _ => {
                return Err(format!(
                    "HTTP filter {:?} has no typed_config (config discovery is not supported)",
                    f.name
                ))
            }
        };
        if let Some(r) = unany::<HttpRbac>(a) {
            if r.matcher.is_some() || r.shadow_matcher.is_some() {
                return Err(format!("RBAC filter {:?} uses the matcher API", f.name));
            }
            out.push(filter(&f.name, r.rules.as_ref(), r.shadow_rules.as_ref())?);
        } else if a.type_url == Router::type_url() {
            break;
        } else if !f.is_optional {
            return Err(format!(
                "HTTP filter {:?} of type {} is not understood",
                f.name, a.type_url
            ));
        }
    }
    if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier {
        let overrides = rc.virtual_hosts.iter().any(|vh| {
            !vh.typed_per_filter_config.is_empty()
                || vh
                    .routes
                    .iter()
                    .any(|r| !r.typed_per_filter_config.is_empty())
        });
        if overrides && !out.is_empty() {
            return Err("per-route filter overrides are not supported beside RBAC".into());
        }
    }
    Ok(out)
}

fn filter(
    name: &str,
    rules: Option<&EnvoyRbac>,
    shadow: Option<&EnvoyRbac>,
) -> Result<Filter, String> {
    Ok(Filter {
        name: name.to_string(),
        rules: rules
            .map(decode_rbac)
            .transpose()
            .map_err(|e| format!("RBAC filter {name:?}: {e}"))?,
        // Shadow rules never enforce: what cannot be read is left out.
        shadow: shadow.and_then(|s| decode_rbac(s).ok()),
    })
}

/// One `RBAC` message.
pub fn decode_rbac(r: &EnvoyRbac) -> Result<Rbac, String> {
    let action = match EnvoyAction::try_from(r.action) {
        Ok(EnvoyAction::Allow) => Action::Allow,
        Ok(EnvoyAction::Deny) => Action::Deny,
        Ok(EnvoyAction::Log) => Action::Log,
        Err(_) => return Err(format!("unknown action {}", r.action)),
    };
    let mut policies = r
        .policies
        .iter()
        .map(|(name, p)| {
            decode_policy(p)
                .map(|p| (name.clone(), p))
                .map_err(|e| format!("policy {name:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Rbac { action, policies })
}

fn decode_policy(p: &EnvoyPolicy) -> Result<Policy, String> {
    if p.condition.is_some() || p.checked_condition.is_some() {
        return Err("CEL conditions are not supported".into());
    }
    Ok(Policy {
        permissions: p
            .permissions
            .iter()
            .map(decode_permission)
            .collect::<Result<_, _>>()?,
        principals: p
            .principals
            .iter()
            .map(decode_principal)
            .collect::<Result<_, _>>()?,
    })
}

fn decode_cidr(c: &CidrRange) -> Result<IpNet, String> {
    let ip: std::net::IpAddr = c
        .address_prefix
        .parse()
        .map_err(|_| format!("{:?} is not an IP address", c.address_prefix))?;
    let len = c.prefix_len.as_ref().map_or(0, |l| l.value);
    let len = u8::try_from(len).map_err(|_| format!("prefix length {len} is too long"))?;
    // Envoy masks the host bits.
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .map_err(|_| format!("prefix length {len} is too long for {ip}"))
}

fn decode_path(p: &PathMatcher) -> Result<StringMatcher, String> {
    match &p.rule {
        Some(path_matcher::Rule::Path(m)) => decode_string(m),
        None => Err("path matcher has no rule".into()),
    }
}

/// Envoy's URI template (`*` one segment, `**` the rest), as istiod sends
/// AuthorizationPolicy `{*}`/`{**}` path templates: read back into the
/// template the engine compiles.
fn decode_uri_template(a: &Any) -> Result<StringMatcher, String> {
    let t: UriTemplateMatchConfig = unany(a).ok_or_else(|| {
        format!(
            "uri_template extension of type {} is not understood",
            a.type_url
        )
    })?;
    let mut istio = String::new();
    for (i, seg) in t.path_template.split('/').enumerate() {
        if i > 0 {
            istio.push('/');
        }
        match seg {
            "*" => istio.push_str("{*}"),
            "**" => istio.push_str("{**}"),
            s if s.contains(['*', '{', '}', '=']) => {
                return Err(format!(
                    "uri template {:?}: only whole-segment * and ** are supported",
                    t.path_template
                ))
            }
            s => istio.push_str(s),
        }
    }
    match PathMatch::parse(&istio)? {
        PathMatch::Template(re) => Ok(StringMatcher::new(StrMatcher::Regex(re))),
        PathMatch::Str(_) => Ok(StringMatcher::exact(istio)),
    }
}

// `metadata` is deprecated in favour of `sourced_metadata`; both are refused.
#[allow(deprecated)]
fn decode_permission(p: &EnvoyPermission) -> Result<Permission, String> {
    use permission::Rule;
    let list = |s: &permission::Set| -> Result<Vec<Permission>, String> {
        s.rules.iter().map(decode_permission).collect()
    };
    Ok(match &p.rule {
        Some(Rule::Any(true)) => Permission::Any,
        Some(Rule::Any(false)) | None => return Err("permission has no rule".into()),
        Some(Rule::AndRules(s)) => Permission::And(list(s)?),
        Some(Rule::OrRules(s)) => Permission::Or(list(s)?),
        Some(Rule::NotRule(inner)) => Permission::Not(Box::new(decode_permission(inner)?)),
        Some(Rule::Header(h)) => Permission::Header(decode_header(h)?),
        Some(Rule::UrlPath(m)) => Permission::UrlPath(decode_path(m)?),
        Some(Rule::DestinationIp(c)) => Permission::DestinationIp(decode_cidr(c)?),
        Some(Rule::DestinationPort(port)) => Permission::DestinationPort(
            u16::try_from(*port).map_err(|_| format!("destination port {port} is out of range"))?,
        ),
        Some(Rule::DestinationPortRange(r)) => {
            let clamp = |v: i32| u16::try_from(v.clamp(0, 65535)).unwrap_or(0);
            Permission::DestinationPortRange(clamp(r.start), clamp(r.end))
        }
        Some(Rule::RequestedServerName(m)) => Permission::RequestedServerName(decode_string(m)?),
        Some(Rule::UriTemplate(ext)) => match &ext.typed_config {
            Some(a) => Permission::UrlPath(decode_uri_template(a)?),
            None => return Err("uri_template without a typed_config".into()),
        },
        Some(Rule::Metadata(m)) => absent_metadata(m.invert),
        Some(other) => return Err(format!("permission {} is not supported", rule_name(other))),
    })
}

/// A metadata matcher (istiod's form for request principals and JWT
/// claims, read from `istio_authn`): no filter before RBAC in a chain the
/// SDK accepts writes dynamic metadata (any other filter makes the port
/// deny), so the metadata is absent and the matcher yields its `invert`,
/// as Envoy and gRPC C-core evaluate it.
fn absent_metadata(invert: bool) -> Permission {
    if invert {
        Permission::Any
    } else {
        Permission::never()
    }
}

fn rule_name(r: &permission::Rule) -> &'static str {
    match r {
        permission::Rule::Matcher(_) => "matcher",
        permission::Rule::SourcedMetadata(_) => "sourced_metadata",
        _ => "of this kind",
    }
}

#[allow(deprecated)]
fn decode_principal(p: &EnvoyPrincipal) -> Result<Principal, String> {
    use principal::Identifier;
    let list = |s: &principal::Set| -> Result<Vec<Principal>, String> {
        s.ids.iter().map(decode_principal).collect()
    };
    Ok(match &p.identifier {
        Some(Identifier::Any(true)) => Principal::Any,
        Some(Identifier::Any(false)) | None => return Err("principal has no identifier".into()),
        Some(Identifier::AndIds(s)) => Principal::And(list(s)?),
        Some(Identifier::OrIds(s)) => Principal::Or(list(s)?),
        Some(Identifier::NotId(inner)) => Principal::Not(Box::new(decode_principal(inner)?)),
        Some(Identifier::Authenticated(a)) => {
            Principal::Authenticated(a.principal_name.as_ref().map(decode_string).transpose()?)
        }
        // `source_ip` is the downstream connection's address in Envoy.
        Some(Identifier::SourceIp(c)) | Some(Identifier::DirectRemoteIp(c)) => {
            Principal::DirectRemoteIp(decode_cidr(c)?)
        }
        Some(Identifier::RemoteIp(c)) => Principal::RemoteIp(decode_cidr(c)?),
        Some(Identifier::Header(h)) => Principal::Header(decode_header(h)?),
        Some(Identifier::UrlPath(m)) => Principal::UrlPath(decode_path(m)?),
        Some(Identifier::Metadata(m)) => {
            if m.invert {
                Principal::Any
            } else {
                Principal::never()
            }
        }
        Some(_) => {
            return Err(
                "principal of this kind (filter_state, custom, sourced_metadata) is not supported"
                    .into(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::MetadataMatcher;
    use mesh_core::matcher::NO_HEADERS;
    use mesh_core::rbac::Attributes;

    fn policy_with(principal: principal::Identifier) -> EnvoyRbac {
        EnvoyRbac {
            action: EnvoyAction::Deny as i32,
            policies: [(
                "p".to_string(),
                EnvoyPolicy {
                    permissions: vec![EnvoyPermission {
                        rule: Some(permission::Rule::Any(true)),
                    }],
                    principals: vec![EnvoyPrincipal {
                        identifier: Some(principal),
                    }],
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    fn attrs() -> Attributes<'static> {
        Attributes {
            headers: &NO_HEADERS,
            url_path: Some("/a"),
            peer: None,
            direct_remote_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: 80,
            sni: None,
        }
    }

    #[test]
    #[allow(deprecated)]
    fn istiods_jwt_metadata_matchers_read_as_absent_metadata() {
        // istiod's requestPrincipals: a metadata matcher on istio_authn.
        let m = |invert| {
            principal::Identifier::Metadata(MetadataMatcher {
                filter: "istio_authn".into(),
                invert,
                ..Default::default()
            })
        };
        let plain = decode_rbac(&policy_with(m(false))).unwrap();
        assert_eq!(plain.first_match(&attrs()), None, "no token: no match");
        let inverted = decode_rbac(&policy_with(m(true))).unwrap();
        assert_eq!(
            inverted.first_match(&attrs()),
            Some("p"),
            "notRequestPrincipals"
        );
    }

    #[test]
    fn filter_state_is_not_understood() {
        use envoy_types::pb::envoy::r#type::matcher::v3::FilterStateMatcher;
        let err = decode_rbac(&policy_with(principal::Identifier::FilterState(
            FilterStateMatcher::default(),
        )))
        .unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn uri_templates_read_back_as_the_engines_templates() {
        let m = decode_uri_template(&crate::types::any(&UriTemplateMatchConfig {
            path_template: "/shop.Cart/*".into(),
        }))
        .unwrap();
        assert!(m.matches("/shop.Cart/Add"));
        assert!(!m.matches("/shop.Cart/a/b"));
        let rest = decode_uri_template(&crate::types::any(&UriTemplateMatchConfig {
            path_template: "/api/**".into(),
        }))
        .unwrap();
        assert!(rest.matches("/api/a/b"));
        assert!(
            decode_uri_template(&crate::types::any(&UriTemplateMatchConfig {
                path_template: "/api/{id=*}".into(),
            }))
            .is_err()
        );
    }
}
