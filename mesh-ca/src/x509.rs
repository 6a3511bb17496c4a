//! Small helpers to read certificates: PEM <-> DER, validity window, the
//! SPIFFE URI SAN, CA flag and public key. Parsing only; no verification
//! (see `bundle` for chain verification).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};
use crate::spiffe::SpiffeId;

/// Parses every `CERTIFICATE` block of a PEM text; errors if there is none.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::cert(what, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::cert(what, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM text.
pub fn key_from_pem(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::key(what, format!("no usable PEM private key: {e}")))
}

/// Encodes one DER certificate as a PEM `CERTIFICATE` block.
pub fn cert_to_pem(der: &CertificateDer<'_>) -> String {
    pem_block("CERTIFICATE", der.as_ref())
}

/// Encodes certificates as concatenated PEM blocks.
pub fn certs_to_pem<'a>(ders: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    ders.into_iter().map(cert_to_pem).collect()
}

/// Encodes DER bytes as a PEM block with the given label.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The facts about a certificate that the mesh cares about.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Every URI SAN, in order.
    pub uri_sans: Vec<String>,
    /// Every DNS SAN, in order.
    pub dns_sans: Vec<String>,
    /// Whether basic constraints mark it as a CA.
    pub is_ca: bool,
    /// Whether subject and issuer names are equal (a root, usually).
    pub self_issued: bool,
    /// The serial number, big-endian bytes.
    pub serial: Vec<u8>,
}

fn to_system_time(ts: i64) -> SystemTime {
    if ts >= 0 {
        UNIX_EPOCH + Duration::from_secs(ts.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(ts.unsigned_abs())
    }
}

pub(crate) fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Error::cert(what, format!("not a parseable X.509 certificate: {e}")))
}

/// Reads validity, SANs and the CA flag from a DER certificate.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo> {
    let cert = parse(der.as_ref(), "certificate")?;
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uri_sans.push((*u).to_string()),
                GeneralName::DNSName(d) => dns_sans.push((*d).to_string()),
                _ => {}
            }
        }
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    Ok(CertInfo {
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
        uri_sans,
        dns_sans,
        is_ca,
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        serial: cert.raw_serial().to_vec(),
    })
}

/// The SPIFFE identity of a leaf certificate: its single `spiffe://` URI SAN.
///
/// Per the X509-SVID rules a leaf carries exactly one URI SAN; a certificate
/// with none, several, or a malformed one is not a mesh identity.
pub fn spiffe_id(der: &CertificateDer<'_>) -> Result<SpiffeId> {
    let info = cert_info(der)?;
    match info.uri_sans.as_slice() {
        [one] => Ok(SpiffeId::parse(one)?),
        [] => Err(Error::cert(
            "peer certificate",
            "has no URI SAN, so it carries no SPIFFE identity",
        )),
        many => Err(Error::cert(
            "peer certificate",
            format!(
                "has {} URI SANs; a SPIFFE certificate has exactly one",
                many.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_block_matches_known_base64() {
        let pem = pem_block("X", b"hello world!?");
        assert_eq!(
            pem,
            "-----BEGIN X-----\naGVsbG8gd29ybGQhPw==\n-----END X-----\n"
        );
        let pem = pem_block("X", b"abc");
        assert!(pem.contains("\nYWJj\n"));
        let pem = pem_block("X", b"ab");
        assert!(pem.contains("\nYWI=\n"));
    }
}
