//! Istio's CustomResourceDefinitions for the test clusters: every kind
//! meshd reads, in the groups and versions Istio serves.

/// The Istio CRDs, as a cluster would have them installed.
pub fn istio_crds() -> String {
    let crd = |group: &str, kind: &str, plural: &str, versions: &[&str]| {
        let versions: String = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "  - name: {v}\n    served: true\n    storage: {}\n    subresources: {{status: {{}}}}\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
                    i == 0
                )
            })
            .collect();
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {}, listKind: {kind}List}}\n  versions:\n{versions}---\n",
            kind.to_lowercase()
        )
    };
    let net = ["v1", "v1beta1", "v1alpha3"];
    let sec = ["v1", "v1beta1"];
    [
        crd(
            "networking.istio.io",
            "VirtualService",
            "virtualservices",
            &net,
        ),
        crd(
            "networking.istio.io",
            "DestinationRule",
            "destinationrules",
            &net,
        ),
        crd("networking.istio.io", "Gateway", "gateways", &net),
        crd(
            "networking.istio.io",
            "ServiceEntry",
            "serviceentries",
            &net,
        ),
        crd(
            "networking.istio.io",
            "WorkloadEntry",
            "workloadentries",
            &net,
        ),
        crd("networking.istio.io", "Sidecar", "sidecars", &net),
        crd(
            "security.istio.io",
            "PeerAuthentication",
            "peerauthentications",
            &sec,
        ),
        crd(
            "security.istio.io",
            "RequestAuthentication",
            "requestauthentications",
            &sec,
        ),
        crd(
            "security.istio.io",
            "AuthorizationPolicy",
            "authorizationpolicies",
            &sec,
        ),
        crd(
            "telemetry.istio.io",
            "Telemetry",
            "telemetries",
            &["v1", "v1alpha1"],
        ),
    ]
    .concat()
}
