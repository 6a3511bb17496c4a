//! Envoy's RBAC semantics, one by one.

use super::*;
use crate::matcher::{StrMatcher, NO_HEADERS};

fn attrs<'a>(
    peer: Option<&'a str>,
    headers: &'a dyn crate::matcher::HeaderSource,
) -> Attributes<'a> {
    Attributes {
        headers,
        url_path: Some("/a"),
        peer,
        direct_remote_ip: "10.0.0.1".parse().ok(),
        remote_ip: "10.0.0.1".parse().ok(),
        destination_ip: None,
        destination_port: 8080,
        sni: None,
    }
}

fn one(action: Action, p: Policy) -> Filter {
    Filter {
        name: "f".into(),
        rules: Some(Rbac {
            action,
            policies: vec![("p".into(), p)],
        }),
        shadow: None,
    }
}

fn any_policy() -> Policy {
    Policy {
        permissions: vec![Permission::Any],
        principals: vec![Principal::Any],
    }
}

#[test]
fn empty_lists_match_nothing() {
    let a = attrs(None, &NO_HEADERS);
    assert!(!Policy::default().matches(&a));
    let only_perm = Policy {
        permissions: vec![Permission::Any],
        principals: vec![],
    };
    assert!(!only_perm.matches(&a));
    assert!(any_policy().matches(&a));
}

#[test]
fn not_authenticated_matches_plaintext() {
    let spiffe = || Some(StrMatcher::Prefix("spiffe://".into()).into());
    let plain = attrs(None, &NO_HEADERS);
    let mtls = attrs(Some("spiffe://td/ns/a/sa/b"), &NO_HEADERS);
    let not_id = Principal::Not(Box::new(Principal::Authenticated(spiffe())));
    assert!(not_id.matches(&plain));
    assert!(!not_id.matches(&mtls));
    assert!(Principal::Authenticated(None).matches(&mtls));
    assert!(!Principal::Authenticated(None).matches(&plain));
    assert!(!Principal::never().matches(&mtls));
    assert!(!Permission::never().matches(&mtls));
}

#[test]
fn allow_deny_log_and_shadow() {
    let a = attrs(None, &NO_HEADERS);
    let never = Policy {
        permissions: vec![Permission::never()],
        principals: vec![Principal::Any],
    };
    let allowed = |f: Filter| evaluate(&[f], &a).allowed;
    assert!(allowed(one(Action::Allow, any_policy())));
    assert!(!allowed(one(Action::Allow, never.clone())));
    let deny = [one(Action::Deny, any_policy())];
    let denied = evaluate(&deny, &a);
    assert!(!denied.allowed);
    assert_eq!(denied.policy, Some("p"));
    assert!(allowed(one(Action::Deny, never)));
    assert!(allowed(one(Action::Log, any_policy())));
    // Shadow rules are reported, never enforced; no rules enforce nothing.
    let shadow = Filter {
        name: "s".into(),
        rules: None,
        shadow: Some(Rbac {
            action: Action::Deny,
            policies: vec![("p".into(), any_policy())],
        }),
    };
    let chain = [shadow];
    let out = evaluate(&chain, &a);
    assert!(out.allowed);
    assert!(!out.shadow[0].allowed);
}

#[test]
fn first_refusal_ends_the_chain() {
    let a = attrs(None, &NO_HEADERS);
    let mut deny = one(Action::Deny, any_policy());
    deny.name = "deny".into();
    let mut allow = one(Action::Allow, any_policy());
    allow.name = "allow".into();
    let chain = [deny, allow];
    let out = evaluate(&chain, &a);
    assert_eq!(out.filter, Some("deny"));
}

#[test]
fn headers_paths_and_ports() {
    let h = [("x-a", "1"), ("x-a", "2")];
    let a = attrs(None, &h);
    let hm = |v: &str| Permission::Header(HeaderMatcher::new("x-a", StringMatcher::exact(v)));
    assert!(hm("1,2").matches(&a));
    assert!(!hm("1").matches(&a));
    assert!(Permission::UrlPath(StringMatcher::exact("/a")).matches(&a));
    let tcp = Attributes {
        url_path: None,
        ..attrs(None, &NO_HEADERS)
    };
    assert!(!Permission::UrlPath(StringMatcher::exact("/a")).matches(&tcp));
    assert!(Permission::DestinationPort(8080).matches(&a));
    assert!(Principal::DirectRemoteIp("10.0.0.0/8".parse().unwrap()).matches(&a));
    assert!(!Principal::RemoteIp("11.0.0.0/8".parse().unwrap()).matches(&a));
}
