//! `ClientTLSSettings`: TLS origination towards the upstream.

use serde::{Deserialize, Serialize};

use super::is_set;
use crate::config::validate::{field, Issues, Validate};

/// Istio's `ClientTLSSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// How to secure the connection (DISABLE when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (MUTUAL without credentialName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client private key file (MUTUAL without credentialName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file that verifies the server (system roots when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding key, certificate and CA (instead of the files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names accepted in the server certificate's SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verifying the server certificate's CA and SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// Istio's `ClientTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text.
    #[default]
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// Mutual TLS with the given client certificate.
    Mutual,
    /// Mutual TLS with the mesh's workload certificates.
    IstioMutual,
}

impl Validate for ClientTlsSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let mode = self.mode.unwrap_or_default();
        if self.insecure_skip_verify == Some(true) {
            let (bad, what) = match mode {
                ClientTlsMode::Simple => (
                    is_set(&self.ca_certificates)
                        || is_set(&self.credential_name)
                        || !self.subject_alt_names.is_empty(),
                    "caCertificates, credentialName or subjectAltNames",
                ),
                ClientTlsMode::Mutual => (
                    is_set(&self.ca_certificates) || !self.subject_alt_names.is_empty(),
                    "caCertificates or subjectAltNames",
                ),
                _ => (false, ""),
            };
            if bad {
                issues.push(
                    field(path, "insecureSkipVerify"),
                    format!("insecureSkipVerify: true skips server verification, so {what} would be ignored; remove them or the flag"),
                );
            }
        }
        let credential = is_set(&self.credential_name);
        if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && credential {
            if is_set(&self.client_certificate)
                || is_set(&self.private_key)
                || is_set(&self.ca_certificates)
                || is_set(&self.ca_crl)
            {
                issues.push(
                    field(path, "credentialName"),
                    "credentialName supplies the certificates; remove clientCertificate, privateKey, caCertificates and caCrl (or drop credentialName)",
                );
            }
            return;
        }
        if mode == ClientTlsMode::Mutual {
            if !is_set(&self.client_certificate) {
                issues.push(
                    field(path, "clientCertificate"),
                    "MUTUAL TLS needs a client certificate; set clientCertificate (and privateKey) or credentialName",
                );
            }
            if !is_set(&self.private_key) {
                issues.push(
                    field(path, "privateKey"),
                    "MUTUAL TLS needs a private key; set privateKey (and clientCertificate) or credentialName",
                );
            }
        }
    }
}
