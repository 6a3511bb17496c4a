//! The gRPC xDS bootstrap (`GRPC_XDS_BOOTSTRAP`) that points a stock
//! proxyless gRPC client or server (grpc-go, grpc-java, Python grpcio,
//! Node grpc-js-xds) at meshd, in the shape istiod's agent writes it: the
//! xDS server, the node (written by [`crate::node`], the one writer the
//! SDK's xDS client also uses), the server listener name template of gRFC
//! A36, and, with a certificate directory, a `file_watcher` certificate
//! provider (gRFC A29) reading Istio's file layout.
//!
//! One builder for `meshctl bootstrap grpc` and `mesh-shim agent`, so the
//! file an injected pod reads is the one the CLI prints.
//!
//! Not here: writing the file or fetching the certificates it names (the
//! agent does that), nor parsing flags (the CLI does).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::encode::INBOUND_LISTENER_PREFIX;
use crate::node::{node_json, to_node, NodeInfo};

/// The certificate chain file in a certificate directory.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// The private key file in a certificate directory.
pub const KEY_FILE: &str = "key.pem";
/// The trust bundle file in a certificate directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// How often `file_watcher` re-reads the files (Istio writes `900s`).
pub const REFRESH_INTERVAL: &str = "900s";

/// How the gRPC client reaches the xDS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelCreds {
    /// Plaintext (meshd's 15010).
    Insecure,
    /// TLS with the workload's certificate (meshd's 15012), the `tls`
    /// channel credentials of gRFC A65 reading the files of
    /// [`GrpcBootstrap::cert_dir`].
    MutualTls,
}

/// What a gRPC xDS bootstrap says.
#[derive(Debug, Clone)]
pub struct GrpcBootstrap {
    /// `host:port` of the xDS server (no scheme).
    pub server_uri: String,
    /// How the channel to it is secured.
    pub channel: ChannelCreds,
    /// Who the workload is (node id and Istio metadata).
    pub node: NodeInfo,
    /// A directory with `cert-chain.pem`, `key.pem` and `root-cert.pem`:
    /// adds the `default` `file_watcher` certificate provider, so
    /// xDS-configured mTLS works. [`ChannelCreds::MutualTls`] needs it.
    pub cert_dir: Option<PathBuf>,
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn file_config(dir: &Path) -> Value {
    json!({
        "certificate_file": file(dir, CERT_CHAIN_FILE),
        "private_key_file": file(dir, KEY_FILE),
        "ca_certificate_file": file(dir, ROOT_CERT_FILE),
        "refresh_interval": REFRESH_INTERVAL,
    })
}

impl GrpcBootstrap {
    /// The bootstrap JSON document.
    pub fn to_json(&self) -> Value {
        let creds = match (&self.channel, &self.cert_dir) {
            (ChannelCreds::MutualTls, Some(dir)) => {
                json!([{"type": "tls", "config": file_config(dir)}])
            }
            // TLS without files to read cannot be written; a caller bug
            // that the plaintext entry makes visible rather than hiding.
            _ => json!([{"type": "insecure"}]),
        };
        let mut doc = json!({
            "xds_servers": [{
                "server_uri": self.server_uri,
                "channel_creds": creds,
                "server_features": ["xds_v3"],
            }],
            "node": node_json(&to_node(&self.node)),
            // gRFC A36: servers substitute their listening ip:port for `%s`;
            // the names match the inbound listeners mesh-xds encodes.
            "server_listener_resource_name_template": format!("{INBOUND_LISTENER_PREFIX}%s"),
        });
        if let Some(dir) = &self.cert_dir {
            doc["certificate_providers"] = json!({
                "default": {
                    "plugin_name": "file_watcher",
                    "config": file_config(dir),
                },
            });
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node() -> NodeInfo {
        NodeInfo {
            namespace: Some("shop".into()),
            proxyless_grpc: true,
            ..NodeInfo::default()
        }
    }

    #[test]
    fn tls_channel_and_file_watcher_read_the_same_files() {
        let b = GrpcBootstrap {
            server_uri: "meshd.istio-system.svc:15012".into(),
            channel: ChannelCreds::MutualTls,
            node: node(),
            cert_dir: Some("/var/lib/istio/data".into()),
        };
        let doc = b.to_json();
        let server = &doc["xds_servers"][0];
        assert_eq!(server["server_uri"], "meshd.istio-system.svc:15012");
        assert_eq!(server["channel_creds"][0]["type"], "tls");
        let provider = &doc["certificate_providers"]["default"];
        assert_eq!(provider["plugin_name"], "file_watcher");
        assert_eq!(server["channel_creds"][0]["config"], provider["config"]);
        assert_eq!(
            provider["config"]["certificate_file"],
            "/var/lib/istio/data/cert-chain.pem"
        );
    }

    #[test]
    fn plaintext_without_files_has_no_provider() {
        let b = GrpcBootstrap {
            server_uri: "127.0.0.1:15010".into(),
            channel: ChannelCreds::Insecure,
            node: node(),
            cert_dir: None,
        };
        let doc = b.to_json();
        assert_eq!(
            doc["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        assert!(doc.get("certificate_providers").is_none());
        assert_eq!(doc["node"]["metadata"]["NAMESPACE"], "shop");
    }
}
