//! RBAC HTTP filters (gRFC A41) from the compiled authorization policy:
//! mesh-core lowers the policy to RBAC ([`mesh_core::authz::lower`],
//! where the layout and every choice is explained, and a property test
//! holds the lowered filters to the engine's decisions); this module only
//! writes those filters as Envoy protos. The YAML is never read here.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action as EnvoyAction, Permission as EnvoyPermission,
    Policy as EnvoyPolicy, Principal as EnvoyPrincipal, Rbac as EnvoyRbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{path_matcher, PathMatcher};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use ipnet::IpNet;
use mesh_core::authz::Lowered;
use mesh_core::rbac::{Action, Filter, Permission, Policy, Principal, Rbac};

use super::listener::http_filter;
use crate::matcher::{encode_header, encode_string};
use crate::types::u32v;

/// The RBAC HTTP filters for a server port, in chain order.
pub fn rbac_filters(lowered: &Lowered) -> Vec<HttpFilter> {
    lowered
        .filters
        .iter()
        .map(|f| http_filter(&f.name, &encode_filter(f)))
        .collect()
}

/// One filter's config.
pub fn encode_filter(f: &Filter) -> RbacFilter {
    RbacFilter {
        rules: f.rules.as_ref().map(encode_rbac),
        shadow_rules: f.shadow.as_ref().map(encode_rbac),
        shadow_rules_stat_prefix: if f.shadow.is_some() {
            "istio_dry_run_".to_string()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

fn encode_rbac(r: &Rbac) -> EnvoyRbac {
    EnvoyRbac {
        action: match r.action {
            Action::Allow => EnvoyAction::Allow,
            Action::Deny => EnvoyAction::Deny,
            Action::Log => EnvoyAction::Log,
        } as i32,
        policies: r
            .policies
            .iter()
            .map(|(name, p)| (name.clone(), encode_policy(p)))
            .collect(),
        ..Default::default()
    }
}

fn encode_policy(p: &Policy) -> EnvoyPolicy {
    EnvoyPolicy {
        permissions: p.permissions.iter().map(encode_permission).collect(),
        principals: p.principals.iter().map(encode_principal).collect(),
        ..Default::default()
    }
}

/// A CIDR range message. IPv6 prefixes are written as eight hex groups:
/// grpc-js-xds cannot parse the dotted form Rust prints for IPv4-mapped
/// addresses (`::ffff:127.0.0.0`) and leaves its server unable to serve.
pub(crate) fn cidr(n: &IpNet) -> CidrRange {
    let address_prefix = match n.network() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":"),
    };
    CidrRange {
        address_prefix,
        prefix_len: Some(u32v(u32::from(n.prefix_len()))),
    }
}

fn encode_permission(p: &Permission) -> EnvoyPermission {
    use permission::Rule;
    let set = |list: &[Permission]| permission::Set {
        rules: list.iter().map(encode_permission).collect(),
    };
    let rule = match p {
        Permission::Any => Rule::Any(true),
        Permission::And(list) => Rule::AndRules(set(list)),
        Permission::Or(list) => Rule::OrRules(set(list)),
        Permission::Not(inner) => Rule::NotRule(Box::new(encode_permission(inner))),
        Permission::Header(h) => Rule::Header(encode_header(h)),
        Permission::UrlPath(m) => Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(encode_string(m))),
        }),
        Permission::DestinationIp(n) => Rule::DestinationIp(cidr(n)),
        Permission::DestinationPort(port) => Rule::DestinationPort(u32::from(*port)),
        Permission::DestinationPortRange(start, end) => Rule::DestinationPortRange(Int32Range {
            start: i32::from(*start),
            end: i32::from(*end),
        }),
        Permission::RequestedServerName(m) => Rule::RequestedServerName(encode_string(m)),
    };
    EnvoyPermission { rule: Some(rule) }
}

fn encode_principal(p: &Principal) -> EnvoyPrincipal {
    use principal::Identifier;
    let set = |list: &[Principal]| principal::Set {
        ids: list.iter().map(encode_principal).collect(),
    };
    let id = match p {
        Principal::Any => Identifier::Any(true),
        Principal::And(list) => Identifier::AndIds(set(list)),
        Principal::Or(list) => Identifier::OrIds(set(list)),
        Principal::Not(inner) => Identifier::NotId(Box::new(encode_principal(inner))),
        Principal::Authenticated(m) => Identifier::Authenticated(principal::Authenticated {
            principal_name: m.as_ref().map(encode_string),
        }),
        Principal::DirectRemoteIp(n) => Identifier::DirectRemoteIp(cidr(n)),
        Principal::RemoteIp(n) => Identifier::RemoteIp(cidr(n)),
        Principal::Header(h) => Identifier::Header(encode_header(h)),
        Principal::UrlPath(m) => Identifier::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(encode_string(m))),
        }),
    };
    EnvoyPrincipal {
        identifier: Some(id),
    }
}
