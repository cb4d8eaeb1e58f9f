//! Key material: PEM decoding, and generating a key pair and self-signed code-signing
//! certificate the way `npx expo-updates codesigning:generate` does (docs/protocol.md §4.6).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::KeyPair;
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, PKCS_RSA_SHA256, SerialNumber};
use rustls_pki_types::PrivatePkcs8KeyDer;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file (no -----BEGIN ...----- block)")]
    NotPem,
    #[error("unexpected PEM block {0:?}: expected an RSA private key, public key or certificate")]
    UnexpectedPem(String),
    #[error("the key was rejected: {0}")]
    Rejected(String),
    #[error("the certificate could not be parsed: {0}")]
    BadCertificate(String),
    #[error("key generation failed: {0}")]
    Generation(String),
}

pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Decodes the first PEM block in `pem`.
pub fn pem_decode(pem: &str) -> Result<PemBlock, KeyError> {
    let start = pem.find("-----BEGIN ").ok_or(KeyError::NotPem)?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----").ok_or(KeyError::NotPem)?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or(KeyError::NotPem)?;
    let body: String = rest[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD.decode(body).map_err(|_| KeyError::NotPem)?;
    Ok(PemBlock { label, der })
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The SubjectPublicKeyInfo DER of a certificate or `PUBLIC KEY` PEM.
pub fn public_key_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let block = pem_decode(pem)?;
    match block.label.as_str() {
        "PUBLIC KEY" => Ok(block.der),
        "RSA PUBLIC KEY" => Ok(block.der),
        "CERTIFICATE" => spki_of_certificate(&block.der),
        other => Err(KeyError::UnexpectedPem(other.to_owned())),
    }
}

/// Minimal DER reader: enough to walk a certificate to its SubjectPublicKeyInfo and a PKCS#8
/// wrapper to its inner PKCS#1 key, without another parsing dependency.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// Returns (tag, contents, whole element) and advances.
    fn next(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let buf = self.0;
        let tag = *buf.first()?;
        let first = *buf.get(1)? as usize;
        let (len, header) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *buf.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let end = header.checked_add(len)?;
        let whole = buf.get(..end)?;
        self.0 = &buf[end..];
        Some((tag, &whole[header..], whole))
    }
}

fn spki_of_certificate(der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = || KeyError::BadCertificate("unexpected structure".into());
    let (_, cert, _) = Der(der).next().ok_or_else(bad)?;
    let (_, tbs, _) = Der(cert).next().ok_or_else(bad)?;
    let mut fields = Der(tbs);
    let (tag, _, _) = fields.next().ok_or_else(bad)?;
    if tag != 0xa0 {
        // v1 certificate without an explicit version: the first field was the serial number.
        return Err(KeyError::BadCertificate(
            "only X.509 v3 certificates are supported".into(),
        ));
    }
    // serial, signature algorithm, issuer, validity, subject, then subjectPublicKeyInfo
    for _ in 0..5 {
        fields.next().ok_or_else(bad)?;
    }
    let (_, _, spki) = fields.next().ok_or_else(bad)?;
    Ok(spki.to_vec())
}

/// PKCS#8 `PrivateKeyInfo` → the PKCS#1 `RSAPrivateKey` it wraps.
fn pkcs1_of_pkcs8(der: &[u8]) -> Option<Vec<u8>> {
    let (_, info, _) = Der(der).next()?;
    let mut fields = Der(info);
    fields.next()?; // version
    fields.next()?; // algorithm
    let (tag, key, _) = fields.next()?;
    (tag == 0x04).then(|| key.to_vec())
}

/// What `aloft keys generate` writes: the same trio as `expo-updates codesigning:generate`.
pub struct GeneratedKeys {
    /// PKCS#1 `-----BEGIN RSA PRIVATE KEY-----`.
    pub private_key_pem: String,
    /// SPKI `-----BEGIN PUBLIC KEY-----`.
    pub public_key_pem: String,
    pub certificate_pem: String,
}

const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// BIT STRING, 7 unused bits, digitalSignature (bit 0).
const KEY_USAGE_DIGITAL_SIGNATURE: &[u8] = &[0x03, 0x02, 0x07, 0x80];
/// SEQUENCE { OID 1.3.6.1.5.5.7.3.3 (codeSigning) }.
const EXT_KEY_USAGE_CODE_SIGNING: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// RSA-2048 (e = 65537) and a self-signed v3 certificate, subject `CN=<common_name>`, valid from
/// now for `validity_years`, with critical keyUsage digitalSignature and critical extKeyUsage
/// codeSigning.
pub fn generate(common_name: &str, validity_years: u32) -> Result<GeneratedKeys, KeyError> {
    let gen_err = |e: &dyn std::fmt::Display| KeyError::Generation(e.to_string());
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| gen_err(&e))?;
    let pkcs8 = rsa.as_der().map_err(|e| gen_err(&e))?;
    let pkcs8 = pkcs8.as_ref().to_vec();
    let pkcs1 = pkcs1_of_pkcs8(&pkcs8).ok_or_else(|| KeyError::Generation("bad PKCS#8".into()))?;
    let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_RSA_SHA256)
        .map_err(|e| gen_err(&e))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let mut serial: [u8; 9] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01; // keep nine significant bytes
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| gen_err(&e))?;
    params.not_before = now;
    params.not_after = now
        .replace_year(now.year() + validity_years as i32)
        .or_else(|_| (now + time::Duration::days(365 * validity_years as i64)).replace_nanosecond(0))
        .map_err(|e| gen_err(&e))?;
    params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    let mut ku = CustomExtension::from_oid_content(OID_KEY_USAGE, KEY_USAGE_DIGITAL_SIGNATURE.to_vec());
    ku.set_criticality(true);
    let mut eku = CustomExtension::from_oid_content(OID_EXT_KEY_USAGE, EXT_KEY_USAGE_CODE_SIGNING.to_vec());
    eku.set_criticality(true);
    params.custom_extensions = vec![ku, eku];
    let cert = params.self_signed(&key_pair).map_err(|e| gen_err(&e))?;

    Ok(GeneratedKeys {
        private_key_pem: pem_encode("RSA PRIVATE KEY", &pkcs1),
        public_key_pem: key_pair.public_key_pem(),
        certificate_pem: cert.pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{Signer, verify};

    #[test]
    fn generated_keys_sign_and_verify() {
        let keys = generate("Aloft Test", 10).unwrap();
        assert!(keys.private_key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(keys.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let signer = Signer::from_pem(&keys.private_key_pem).unwrap();
        let sig = signer.sign(b"{\"id\":1}").unwrap();
        verify(&keys.certificate_pem, b"{\"id\":1}", &sig).unwrap();
        verify(&keys.public_key_pem, b"{\"id\":1}", &sig).unwrap();
        assert_eq!(
            verify(&keys.certificate_pem, b"{\"id\":2}", &sig),
            Err(crate::signature::SignatureError::DoesNotVerify)
        );
        // Same public key in the certificate and the public key file.
        assert_eq!(
            public_key_der(&keys.certificate_pem).unwrap(),
            public_key_der(&keys.public_key_pem).unwrap()
        );
    }

    #[test]
    fn certificate_has_what_the_client_checks() {
        use x509_parser::prelude::*;
        let keys = generate("OTA Sample", 3).unwrap();
        let der = pem_decode(&keys.certificate_pem).unwrap().der;
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.version(), X509Version::V3);
        assert_eq!(cert.subject().to_string(), "CN=OTA Sample");
        assert_eq!(cert.issuer().to_string(), "CN=OTA Sample");
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.digital_signature());
        assert!(!ku.value.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.critical);
        assert!(eku.value.code_signing);
        assert!(cert.basic_constraints().unwrap().is_none());
        let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400 / 365;
        assert_eq!(years, 3);
        assert!(cert.validity().is_valid());
        let serial = cert.raw_serial();
        assert_eq!(serial.len(), 9);
        assert!(serial[0] < 0x80);
        match cert.public_key().parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(rsa) => {
                assert_eq!(rsa.key_size(), 2048);
                assert_eq!(rsa.exponent, &[0x01, 0x00, 0x01]);
            }
            other => panic!("not RSA: {other:?}"),
        }
    }
}
