//! Which kind of connection to open to one endpoint: the pure decision,
//! from the cluster's DestinationRule TLS settings and the endpoint's
//! registry facts, without I/O.
//!
//! Istio's rules, in order:
//! 1. A DestinationRule `tls` block decides: `DISABLE` plaintext, `SIMPLE`
//!    TLS, `MUTUAL` TLS with a client certificate from files,
//!    `ISTIO_MUTUAL` the workload's mesh certificate.
//! 2. Without one, auto-mTLS (`enableAutoMtls`, on by default): mesh mTLS
//!    to endpoints labelled `security.istio.io/tlsMode: istio`, plaintext
//!    to the others. A workload without a mesh certificate cannot take part
//!    and sends plaintext, as a pod without a sidecar would.

use std::sync::Arc;

use mesh_core::config::networking::destination_rule::{ClientTlsMode, ClientTlsSettings};
use mesh_core::registry::TlsMode;

use crate::balance::ConnectTarget;

/// How to secure one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origination {
    /// No TLS.
    Plaintext,
    /// `SIMPLE` or `MUTUAL` from a DestinationRule: TLS verified against
    /// `caCertificates`, optionally presenting the client certificate files.
    Files(Arc<ClientTlsSettings>),
    /// Mesh mTLS with the workload certificate, verifying the peer's SPIFFE
    /// identity.
    IstioMutual {
        /// Identities the server may present (any of them); empty accepts
        /// any identity of the trust domain (or its aliases).
        expected: Vec<String>,
        /// The SNI to send.
        sni: String,
        /// True when chosen by auto-mTLS rather than a DestinationRule.
        auto: bool,
    },
}

impl Origination {
    /// The Istio name of the mode, for messages.
    pub fn mode_name(&self) -> &'static str {
        match self {
            Origination::Plaintext => "DISABLE",
            Origination::Files(s) if s.mode == Some(ClientTlsMode::Mutual) => "MUTUAL",
            Origination::Files(_) => "SIMPLE",
            Origination::IstioMutual { auto: true, .. } => "ISTIO_MUTUAL (auto mTLS)",
            Origination::IstioMutual { .. } => "ISTIO_MUTUAL",
        }
    }
}

/// Decides the origination for `target`. `auto_mtls` is MeshConfig's
/// `enableAutoMtls`; `has_identity` says whether this workload has a mesh
/// certificate (auto-mTLS falls back to plaintext without one; an explicit
/// `ISTIO_MUTUAL` does not, the connector reports the missing identity).
pub fn decide(target: &ConnectTarget, auto_mtls: bool, has_identity: bool) -> Origination {
    match &target.tls {
        Some(tls) => match tls.mode.unwrap_or_default() {
            ClientTlsMode::Disable => Origination::Plaintext,
            ClientTlsMode::Simple | ClientTlsMode::Mutual => Origination::Files(tls.clone()),
            ClientTlsMode::IstioMutual => Origination::IstioMutual {
                // A DestinationRule's SANs replace the endpoint's identity,
                // as Istio does for ISTIO_MUTUAL.
                expected: if tls.subject_alt_names.is_empty() {
                    target.identity.iter().cloned().collect()
                } else {
                    tls.subject_alt_names.clone()
                },
                sni: tls
                    .sni
                    .clone()
                    .unwrap_or_else(|| istio_sni(&target.cluster, &target.host)),
                auto: false,
            },
        },
        None if auto_mtls && has_identity && target.tls_mode == TlsMode::Istio => {
            Origination::IstioMutual {
                expected: target.identity.iter().cloned().collect(),
                sni: istio_sni(&target.cluster, &target.host),
                auto: true,
            }
        }
        None => Origination::Plaintext,
    }
}

/// The SNI Istio sends for mesh mTLS: the cluster name in DNS-SRV form,
/// `outbound_.<port>_.<subset>_.<host>` (`outbound_.9080_._.reviews...`
/// without a subset). Clusters not named `dir|port|subset|host` use `host`.
pub fn istio_sni(cluster: &str, host: &str) -> String {
    let parts: Vec<&str> = cluster.split('|').collect();
    match parts.as_slice() {
        [dir, port, subset, h] if !h.is_empty() => format!("{dir}_.{port}_.{subset}_.{h}"),
        _ => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(tls: Option<ClientTlsSettings>, mode: TlsMode, id: Option<&str>) -> ConnectTarget {
        ConnectTarget {
            addr: "127.0.0.1:8080".parse().unwrap(),
            cluster: "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
            host: "reviews.default.svc.cluster.local".into(),
            identity: id.map(str::to_string),
            tls_mode: mode,
            keepalive: None,
            tls: tls.map(Arc::new),
            http2: false,
        }
    }

    fn dr(mode: ClientTlsMode) -> ClientTlsSettings {
        ClientTlsSettings {
            mode: Some(mode),
            ..ClientTlsSettings::default()
        }
    }

    const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    #[test]
    fn auto_mtls_follows_the_endpoint_label() {
        let t = target(None, TlsMode::Istio, Some(ID));
        assert_eq!(
            decide(&t, true, true),
            Origination::IstioMutual {
                expected: vec![ID.into()],
                sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local".into(),
                auto: true,
            }
        );
        // Not in the mesh, auto-mTLS off, or no certificate: plaintext.
        assert_eq!(
            decide(&target(None, TlsMode::Disabled, Some(ID)), true, true),
            Origination::Plaintext
        );
        assert_eq!(decide(&t, false, true), Origination::Plaintext);
        assert_eq!(decide(&t, true, false), Origination::Plaintext);
    }

    #[test]
    fn destination_rule_wins_over_auto_mtls() {
        let t = target(Some(dr(ClientTlsMode::Disable)), TlsMode::Istio, Some(ID));
        assert_eq!(decide(&t, true, true), Origination::Plaintext);
        let t = target(Some(dr(ClientTlsMode::Simple)), TlsMode::Istio, None);
        assert!(matches!(decide(&t, true, true), Origination::Files(_)));
        assert_eq!(decide(&t, true, true).mode_name(), "SIMPLE");
        let t = target(Some(dr(ClientTlsMode::Mutual)), TlsMode::Disabled, None);
        assert_eq!(decide(&t, true, true).mode_name(), "MUTUAL");
        // Explicit ISTIO_MUTUAL applies to non-mesh endpoints and without a
        // certificate too (the connector reports the missing identity).
        let mut s = dr(ClientTlsMode::IstioMutual);
        s.sni = Some("custom.sni".into());
        s.subject_alt_names = vec!["spiffe://cluster.local/ns/x/sa/y".into()];
        let t = target(Some(s), TlsMode::Disabled, Some(ID));
        assert_eq!(
            decide(&t, false, false),
            Origination::IstioMutual {
                expected: vec!["spiffe://cluster.local/ns/x/sa/y".into()],
                sni: "custom.sni".into(),
                auto: false,
            }
        );
    }

    #[test]
    fn sni_forms() {
        assert_eq!(
            istio_sni("outbound|80||a.b.svc.cluster.local", "a"),
            "outbound_.80_._.a.b.svc.cluster.local"
        );
        assert_eq!(
            istio_sni("PassthroughCluster", "example.com"),
            "example.com"
        );
    }
}
