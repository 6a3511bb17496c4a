//! The telemetry policy's listener in an identity's resources: only for
//! SDK nodes, per identity (never in the shared outbound side), and
//! unchanged, bytes and all, by edits that leave the policy as it was.
#![allow(clippy::unwrap_used)]

use super::tests_support::*;
use super::*;
use mesh_xds::telemetry_policy::{decode_telemetry_listener, TELEMETRY_LISTENER};
use mesh_xds::types::{self, unany};

/// A Telemetry for `app: a` only, sampling `sampling` percent.
fn telemetry(sampling: u32) -> String {
    format!("---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: a, namespace: demo}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  tracing: [{{randomSamplingPercentage: {sampling}}}]\n")
}

fn sdk(app: &str) -> ClientKey {
    ClientKey {
        labels: vec![("app".into(), app.into())],
        mesh_sdk: true,
        ..key()
    }
}

fn carried(c: &Compiled) -> Option<Any> {
    c.snapshot()
        .resources(types::LISTENER)?
        .get(TELEMETRY_LISTENER)
        .cloned()
}

fn policy(c: &Compiled) -> mesh_core::telemetry::TelemetryPolicy {
    decode_telemetry_listener(&unany(&carried(c).unwrap()).unwrap()).unwrap()
}

#[test]
fn only_sdk_nodes_get_it_and_each_identity_its_own() {
    let c = compiler_with("5s", &telemetry(10));
    let cache = OutboundCache::default();
    let a = compile(&c, &sdk("a"), None, &cache);
    let b = compile(&c, &sdk("b"), None, &cache);
    // Envoy or a stock gRPC client of the same identity: nothing extra.
    let envoy = compile(
        &c,
        &ClientKey {
            mesh_sdk: false,
            ..sdk("a")
        },
        None,
        &cache,
    );
    let grpc = ClientKey {
        proxyless_grpc: true,
        mesh_sdk: false,
        ..sdk("a")
    };
    assert!(carried(&envoy).is_none());
    assert!(carried(&compile(&c, &grpc, None, &cache)).is_none());

    // Each identity its own policy, as a local compile gives it...
    for (k, got) in [(sdk("a"), &a), (sdk("b"), &b)] {
        assert_eq!(policy(got), *c.compile(&k.client()).telemetry);
    }
    assert_eq!(policy(&a).client.tracing.random_sampling_percentage, 10.0);
    assert_ne!(policy(&a), policy(&b));
    // ...beside one shared outbound side, which never holds it.
    assert!(Arc::ptr_eq(&a.outbound, &b.outbound));
    assert!(Arc::ptr_eq(&a.outbound, &envoy.outbound));
    assert!(!a
        .outbound
        .content
        .snapshot
        .resources(types::LISTENER)
        .unwrap()
        .contains_key(TELEMETRY_LISTENER));
}

#[test]
fn it_changes_only_when_the_policy_does() {
    let k = sdk("a");
    let first = compile1(&compiler_with("5s", &telemetry(10)), &k, None);
    // A route edit: the identity's own listeners are the very same.
    let routes = compile1(&compiler_with("7s", &telemetry(10)), &k, Some(&first));
    assert!(Arc::ptr_eq(
        first.inbound_content.as_ref().unwrap(),
        routes.inbound_content.as_ref().unwrap()
    ));
    // A policy edit: a new carrier.
    let edited = compile1(&compiler_with("7s", &telemetry(20)), &k, Some(&routes));
    assert_ne!(carried(&edited), carried(&routes));
    assert_eq!(
        policy(&edited).client.tracing.random_sampling_percentage,
        20.0
    );
    // Another identity's policy edit leaves this one's alone.
    let b = sdk("b");
    let b1 = compile1(&compiler_with("5s", &telemetry(10)), &b, None);
    let b2 = compile1(&compiler_with("5s", &telemetry(20)), &b, Some(&b1));
    assert!(Arc::ptr_eq(
        b1.inbound_content.as_ref().unwrap(),
        b2.inbound_content.as_ref().unwrap()
    ));
}

#[test]
fn a_pod_overlay_keeps_it() {
    // `a` serves port 80: a pod with its own IP gets an overlay of its
    // server listeners, which must carry the identity's policy too.
    let k = ClientKey {
        instance_ips: vec!["10.0.0.9".into()],
        ..sdk("a")
    };
    let c = compiler_with("5s", &telemetry(10));
    assert_eq!(k.sharing(&c), Sharing::Overlay);
    let id = compile1(&c, &k.identity(), None);
    let o = overlay(&id, &k).unwrap();
    let l = o.snapshot.resources(types::LISTENER).unwrap();
    assert_eq!(l.get(TELEMETRY_LISTENER), carried(&id).as_ref());
    assert!(l.keys().any(|n| n.contains("10.0.0.9")));
}
