//! An inbound request's method, URI and headers, as a server receives
//! them, through what the SDK's server does before the application.

use std::net::SocketAddr;
use std::sync::OnceLock;

use http::{HeaderName, HeaderValue, Method, Request, Uri};
use mesh_core::authz::lower::{attributes, peer_uri};
use mesh_core::authz::{
    normalize, CompiledPolicy, Normalization, PolicySet, Protocol, StockServer, Verdict,
};
use mesh_core::config::security::authorization_policy::AuthorizationPolicy;
use mesh_core::config::security::request_authentication::JwtRule;
use mesh_core::rbac;
use mesh_core::spiffe::SpiffeId;
use mesh_tower::server::authz::{authz_request, normalize_request_path};
use mesh_tower::server::jwt::token;
use mesh_tower::server::{ConnectionInfo, PeerIdentity};
use mesh_tower::{body, MeshBody};
use serde_json::json;

/// Policies that read every part of a request: paths (templates, prefixes,
/// notPaths), methods, hosts, ports, headers, principals, IP blocks.
fn specs() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "allow-api",
            json!({"action": "ALLOW", "rules": [
                {"to": [{"operation": {"paths": ["/api/{*}/items", "/public/*"],
                    "methods": ["GET", "POST"], "hosts": ["*.fuzz.test", "reviews"]}}]},
                {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/*"]}}],
                 "to": [{"operation": {"notPaths": ["/admin*"], "ports": ["8080"]}}]},
                {"from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "notRemoteIpBlocks": ["192.0.2.0/24"]}}],
                 "when": [{"key": "request.headers[x-tenant]", "values": ["a*", "b"]}]}
            ]}),
        ),
        (
            "deny-admin",
            json!({"action": "DENY", "rules": [
                {"to": [{"operation": {"paths": ["/admin", "/admin/*", "/api/{**}/secret"]}}]},
                {"when": [{"key": "request.headers[x-user]", "values": ["root", "*evil"]}]},
                {"from": [{"source": {"notNamespaces": ["default", "prod-*"]}}],
                 "to": [{"operation": {"methods": ["DELETE"]}}]}
            ]}),
        ),
    ]
}

fn sets() -> &'static [PolicySet] {
    static SETS: OnceLock<Vec<PolicySet>> = OnceLock::new();
    SETS.get_or_init(|| {
        let policies: Vec<CompiledPolicy> = specs()
            .into_iter()
            .map(|(name, spec)| {
                let spec: AuthorizationPolicy = match serde_json::from_value(spec) {
                    Ok(s) => s,
                    Err(e) => panic!("{name}: {e}"),
                };
                CompiledPolicy::from_spec("default", name, &spec, false)
            })
            .collect();
        [
            Normalization::None,
            Normalization::Base,
            Normalization::MergeSlashes,
            Normalization::DecodeAndMergeSlashes,
        ]
        .into_iter()
        .map(|n| PolicySet::from_compiled(policies.clone(), n))
        .collect()
    })
}

fn jwt_rule() -> &'static JwtRule {
    static RULE: OnceLock<JwtRule> = OnceLock::new();
    RULE.get_or_init(|| {
        let rule = json!({"issuer": crate::jwt::ISSUER,
            "fromHeaders": [{"name": "authorization", "prefix": "Bearer "}, {"name": "x-jwt"}],
            "fromParams": ["access_token", "token"], "fromCookies": ["session"]});
        match serde_json::from_value(rule) {
            Ok(r) => r,
            Err(e) => panic!("jwt rule: {e}"),
        }
    })
}

/// The parts of a request, as the input spells them: a first line
/// `METHOD URI`, then `name: value` lines. Whatever HTTP could not carry
/// (a bad method, URI, name or value) is a request hyper refuses first.
struct Parts {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    mtls: bool,
}

fn parse(data: &[u8]) -> Option<Parts> {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next()?;
    let sp = first.iter().position(|b| *b == b' ')?;
    let method = Method::from_bytes(&first[..sp]).ok()?;
    let uri = Uri::try_from(&first[sp + 1..]).ok()?;
    let mut headers = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        headers.push((name, HeaderValue::from_bytes(value).ok()?));
    }
    Some(Parts {
        method,
        uri,
        headers,
        mtls: data.len().is_multiple_of(2),
    })
}

fn request(p: &Parts) -> Request<MeshBody> {
    let mut req = Request::new(body::empty());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    for (n, v) in &p.headers {
        req.headers_mut().append(n.clone(), v.clone());
    }
    let peer: SocketAddr = ([10, 1, 2, 3], 40000).into();
    let identity = p.mtls.then(|| {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/prod-eu/sa/client");
        match id {
            Ok(id) => PeerIdentity::new(id),
            Err(e) => panic!("fixed identity: {e}"),
        }
    });
    req.extensions_mut().insert(ConnectionInfo {
        peer_addr: peer,
        local_addr: ([127, 0, 0, 1], 8080).into(),
        port: 8080,
        identity,
        sni: None,
    });
    req
}

/// See the crate docs.
pub fn inbound(data: &[u8]) {
    let Some(parts) = parse(data) else {
        return;
    };
    let _ = token::find(
        jwt_rule(),
        &request(&parts).headers().clone(),
        parts.uri.query(),
    );
    for set in sets() {
        let mut req = request(&parts);
        if normalize_request_path(&mut req, set.normalization()).is_err() {
            // Answered 400 before any policy.
            continue;
        }
        for hops in 0..2 {
            let areq = authz_request(&req, hops);
            let check = set.check(&areq);
            let engine = check.verdict == Verdict::Allow && check.custom_provider.is_none();
            let Ok(path) = normalize(&areq.path, set.normalization()) else {
                assert!(!engine, "the engine allowed a path normalization rejects");
                continue;
            };
            for server in [StockServer::Grpc, StockServer::GrpcJs] {
                let lowered = set.lower_for(Protocol::Http, server);
                let peer = peer_uri(&areq);
                let out = rbac::evaluate(
                    &lowered.filters,
                    &attributes(&areq, Some(&path), peer.as_deref()),
                );
                if lowered.is_exact() {
                    assert_eq!(
                        engine, out.allowed,
                        "{server:?}: the engine and the RBAC filters disagree on {areq:?}"
                    );
                } else {
                    assert!(
                        engine || !out.allowed,
                        "{server:?}: RBAC allows what the engine denies: {areq:?}"
                    );
                }
            }
        }
    }
}
