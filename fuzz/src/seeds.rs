//! Seed inputs for every target, made from the project's own examples and
//! encoders so the fuzzer starts from inputs that reach deep (a config that
//! compiles, responses a client accepts, tokens that verify).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mesh_core::compile::Compiler;
use mesh_core::config::load_paths;
use mesh_core::config::MeshConfig;
use mesh_core::model::Client;
use mesh_xds::client::fuzzing::cache_bytes;
use mesh_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use mesh_xds::pb::google::protobuf::Any;
use mesh_xds::{encode, types, EncodeOptions, Resources};
use prost::Message;
use serde_json::json;

use crate::xds::frame;

/// The private key of [`crate::jwt::JWKS`] (PKCS#8, P-256): a test key
/// made for the fuzz seeds, never used for anything else.
pub const SIGNING_KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmff+OdskfgBRNPjJtus/JmGh8/r6PVhrGnUvsQb6Dg6hRANCAASklQTnLmzQBWnDsTd7Yyowk02WjJ+qnuwWE7u5PjHgRLbERKs7QxtJmC0o5d1tf+uZIS3Gez4Ou7fRJL1tTExS";

/// The examples directory (Istio YAML the demo and docs use).
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Seeds of `target`.
pub fn of(target: &str) -> Vec<Vec<u8>> {
    match target {
        "yaml" => yaml(),
        "xds" => xds(),
        "jwt" => jwt(),
        "path" => PATHS.iter().map(|p| p.as_bytes().to_vec()).collect(),
        "inbound" => INBOUND.iter().map(|p| p.as_bytes().to_vec()).collect(),
        other => panic!("no target {other}"),
    }
}

fn yaml() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in ["bookinfo", "mistakes"] {
        let Ok(entries) = std::fs::read_dir(examples().join(dir)) else {
            panic!("cannot read {}", examples().join(dir).display());
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push(b);
                }
            }
        }
    }
    // The whole bookinfo mesh in one input, so references resolve.
    let mut all = Vec::new();
    for f in ["services", "workloads", "traffic", "security"] {
        if let Ok(b) = std::fs::read(examples().join(format!("bookinfo/{f}.yaml"))) {
            all.extend_from_slice(b"---\n");
            all.extend_from_slice(&b);
        }
    }
    out.push(all);
    out
}

/// The resources meshd would send bookinfo's productpage.
fn bookinfo_resources() -> Resources {
    let loaded = match load_paths(&[&examples().join("bookinfo")]) {
        Ok(l) => l,
        Err(e) => panic!("examples/bookinfo: {e}"),
    };
    let compiler = Compiler::new(loaded.resources, MeshConfig::default());
    let client = Client::new(
        "bookinfo",
        [("app".to_string(), "productpage".to_string())].into(),
    );
    encode(&compiler.compile(&client), &EncodeOptions::default())
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

fn xds() -> Vec<Vec<u8>> {
    let r = bookinfo_resources();
    // In the order a server sends them: CDS, EDS, LDS, RDS.
    let by_type: Vec<(&str, Vec<Any>)> = vec![
        (
            types::CLUSTER,
            r.clusters.iter().map(|m| any(types::CLUSTER, m)).collect(),
        ),
        (
            types::ENDPOINT,
            r.endpoints
                .iter()
                .map(|m| any(types::ENDPOINT, m))
                .collect(),
        ),
        (
            types::LISTENER,
            r.listeners
                .iter()
                .map(|m| any(types::LISTENER, m))
                .collect(),
        ),
        (
            types::ROUTE,
            r.routes.iter().map(|m| any(types::ROUTE, m)).collect(),
        ),
    ];
    let sotw: Vec<DiscoveryResponse> = by_type
        .iter()
        .enumerate()
        .map(|(i, (t, res))| DiscoveryResponse {
            version_info: "1".into(),
            resources: res.clone(),
            type_url: t.to_string(),
            nonce: i.to_string(),
            ..Default::default()
        })
        .collect();
    let delta: Vec<DeltaDiscoveryResponse> = by_type
        .iter()
        .enumerate()
        .map(|(i, (t, res))| DeltaDiscoveryResponse {
            system_version_info: "1".into(),
            type_url: t.to_string(),
            nonce: i.to_string(),
            resources: res
                .iter()
                .enumerate()
                .map(|(j, a)| Resource {
                    name: resource_name(t, &a.value).unwrap_or_else(|| format!("r{j}")),
                    version: "1".into(),
                    resource: Some(a.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let mut cache = vec![2];
    cache.extend(cache_bytes(&r));
    vec![frame(0, &sotw), frame(1, &delta), cache]
}

/// The name of an encoded resource (Delta carries names beside resources).
fn resource_name(type_url: &str, bytes: &[u8]) -> Option<String> {
    use mesh_xds::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    Some(match type_url {
        types::CLUSTER => Cluster::decode(bytes).ok()?.name,
        types::ENDPOINT => ClusterLoadAssignment::decode(bytes).ok()?.cluster_name,
        types::LISTENER => Listener::decode(bytes).ok()?.name,
        types::ROUTE => RouteConfiguration::decode(bytes).ok()?.name,
        _ => return None,
    })
}

/// Signs `claims` with [`SIGNING_KEY`] (ES256).
pub fn sign(claims: &serde_json::Value) -> String {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let der = match base64::engine::general_purpose::STANDARD.decode(SIGNING_KEY) {
        Ok(d) => d,
        Err(e) => panic!("signing key: {e}"),
    };
    let rng = ring::rand::SystemRandom::new();
    let key = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng) {
        Ok(k) => k,
        Err(e) => panic!("signing key: {e}"),
    };
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "fuzz", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let sig = match key.sign(&rng, input.as_bytes()) {
        Ok(s) => s,
        Err(e) => panic!("signing: {e}"),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn jwt() -> Vec<Vec<u8>> {
    use crate::jwt::{AUDIENCE, ISSUER, JWKS, NOW};
    let good = json!({"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": NOW + 3600, "nbf": NOW - 10, "iat": NOW - 10});
    let expired = json!({"iss": ISSUER, "sub": "alice", "aud": [AUDIENCE, "x"], "exp": NOW - 3600});
    let other = json!({"iss": "https://other.test", "sub": "bob", "exp": "soon", "groups": ["a", "b"], "nested": {"k": 1}});
    let mut out: Vec<Vec<u8>> = [good, expired, other]
        .iter()
        .map(|c| sign(c).into_bytes())
        .collect();
    out.push(JWKS.as_bytes().to_vec());
    out.push(br#"{"keys":[{"kty":"RSA","kid":"r","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#.to_vec());
    out.push(b"eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.".to_vec());
    out
}

const PATHS: &[&str] = &[
    "/api/v1/items?x=1",
    "/a/./b/../c",
    "//double//slash/",
    "/%2e%2e/%2E/etc/passwd",
    "/a%2Fb%5cc",
    "/a\\b\\..\\c",
    "/%41%7e%2d%5F",
    "/a/b/c/../../..",
    "/..;/admin",
    "/admin#frag",
    "/p%252Fq",
    "/%",
    "/%zz",
    "*",
    "",
];

const INBOUND: &[&str] = &[
    "GET /api/v1/items\nhost: reviews.fuzz.test\nx-tenant: acme",
    "POST /public/x?access_token=abc&token=def\nhost: reviews:9080\nauthorization: Bearer abc.def.ghi",
    "GET /admin/../api/v1/items\nhost: a.fuzz.test",
    "DELETE //admin%2Fusers\nhost: Reviews\nx-user: root\nx-user: other",
    "GET /api/x/y/secret\nhost: reviews\nx-forwarded-for: 192.0.2.1, 10.2.3.4\ncookie: a=b; session=tok",
    "PUT http://reviews.fuzz.test:8080/public/%2e%2e/admin HTTP/1.1\nx-jwt: t",
    "OPTIONS *\nhost: x",
];
