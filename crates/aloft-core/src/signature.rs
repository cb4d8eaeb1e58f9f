//! Code signing (docs/protocol.md §4): the `expo-expect-signature` request header, RSASSA-PKCS1-v1_5
//! SHA-256 over the exact bytes of a manifest or directive, and the `expo-signature` header.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, RsaKeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sfv::{BareItem, DictSerializer, Dictionary, KeyRef, ListEntry, Parser, StringRef};

use crate::keys::{self, KeyError};

/// The only algorithm the client knows.
pub const ALG: &str = "rsa-v1_5-sha256";
/// What the client assumes when `codeSigningMetadata.keyid` is absent.
pub const DEFAULT_KEYID: &str = "root";

/// A parsed `expo-expect-signature` request header: `sig, keyid="main", alg="rsa-v1_5-sha256"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectSignature {
    pub keyid: String,
    pub alg: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpectSignatureError {
    #[error("expo-expect-signature is not a valid structured-field dictionary")]
    NotADictionary,
    #[error("expo-expect-signature member {0:?} must be a string")]
    NotAString(&'static str),
    #[error("expo-expect-signature asks for algorithm {0:?}; only \"rsa-v1_5-sha256\" exists")]
    UnsupportedAlg(String),
}

impl ExpectSignature {
    pub fn parse(value: &[u8]) -> Result<Self, ExpectSignatureError> {
        // What both clients send, byte for byte: answered without building a dictionary.
        if let Some(keyid) = value
            .strip_prefix(b"sig, keyid=\"")
            .and_then(|rest| rest.strip_suffix(b"\", alg=\"rsa-v1_5-sha256\""))
            .filter(|keyid| keyid.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b)))
            .and_then(|keyid| std::str::from_utf8(keyid).ok())
        {
            return Ok(Self {
                keyid: keyid.to_owned(),
                alg: ALG.to_owned(),
            });
        }
        let dict: Dictionary = Parser::new(value)
            .parse()
            .map_err(|_| ExpectSignatureError::NotADictionary)?;
        let string_member = |name: &'static str| -> Result<Option<String>, ExpectSignatureError> {
            match dict.get(name) {
                None => Ok(None),
                Some(ListEntry::Item(item)) => match &item.bare_item {
                    BareItem::String(s) => Ok(Some(s.as_str().to_owned())),
                    _ => Err(ExpectSignatureError::NotAString(name)),
                },
                Some(ListEntry::InnerList(_)) => Err(ExpectSignatureError::NotAString(name)),
            }
        };
        let keyid = string_member("keyid")?.unwrap_or_else(|| DEFAULT_KEYID.to_owned());
        let alg = string_member("alg")?.unwrap_or_else(|| ALG.to_owned());
        if alg != ALG {
            return Err(ExpectSignatureError::UnsupportedAlg(alg));
        }
        Ok(Self { keyid, alg })
    }
}

/// A signature as stored with an update: standard padded base64 and the key id it was made with.
/// `sig` is standard padded base64 of the RSA signature; `keyid` names the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CodeSignature {
    pub sig: String,
    pub keyid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not standard padded base64")]
    NotBase64,
    #[error("key id {0:?} cannot be sent as a structured-field string (printable ASCII only)")]
    BadKeyId(String),
    #[error("signing failed")]
    SigningFailed,
    #[error("signature does not verify with the given key")]
    DoesNotVerify,
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl CodeSignature {
    /// Checks the parts so that [`CodeSignature::header_value`] cannot fail later.
    pub fn new(sig: String, keyid: String) -> Result<Self, SignatureError> {
        let decoded = STANDARD.decode(sig.as_bytes()).map_err(|_| SignatureError::NotBase64)?;
        if decoded.is_empty() || STANDARD.encode(&decoded) != sig {
            return Err(SignatureError::NotBase64);
        }
        StringRef::from_str(&keyid).map_err(|_| SignatureError::BadKeyId(keyid.clone()))?;
        if keyid.is_empty() {
            return Err(SignatureError::BadKeyId(keyid));
        }
        Ok(Self { sig, keyid })
    }

    /// `sig="…", keyid="…", alg="rsa-v1_5-sha256"`: every member an sf-string, as iOS requires.
    pub fn header_value(&self) -> String {
        let mut ser = DictSerializer::new();
        let string = |s: &str| StringRef::from_str(s).map(|s| s.to_owned());
        // Both were validated in `new`; base64 is always a valid sf-string.
        if let Ok(sig) = string(&self.sig) {
            ser.bare_item(KeyRef::constant("sig"), &sig);
        }
        if let Ok(keyid) = string(&self.keyid) {
            ser.bare_item(KeyRef::constant("keyid"), &keyid);
        }
        ser.bare_item(KeyRef::constant("alg"), StringRef::constant(ALG));
        ser.finish().unwrap_or_default()
    }
}

/// An RSA private key that signs manifests and directives.
pub struct Signer {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Accepts PKCS#1 (`BEGIN RSA PRIVATE KEY`, what `expo-updates codesigning:generate` writes)
    /// or PKCS#8 (`BEGIN PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let block = keys::pem_decode(pem)?;
        let key = match block.label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&block.der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&block.der),
            other => return Err(KeyError::UnexpectedPem(other.to_owned())),
        }
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(Self {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// Standard padded base64 of RSASSA-PKCS1-v1_5 SHA-256 over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, SignatureError> {
        let mut out = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut out)
            .map_err(|_| SignatureError::SigningFailed)?;
        Ok(STANDARD.encode(out))
    }
}

/// Verifies a signature with the public key of a PEM certificate or SPKI public key.
pub fn verify(public_pem: &str, message: &[u8], sig_b64: &str) -> Result<(), SignatureError> {
    let spki = keys::public_key_der(public_pem)?;
    let sig = STANDARD.decode(sig_b64).map_err(|_| SignatureError::NotBase64)?;
    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, spki)
        .verify(message, &sig)
        .map_err(|_| SignatureError::DoesNotVerify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_both_clients_send() {
        let e = ExpectSignature::parse(br#"sig, keyid="main", alg="rsa-v1_5-sha256""#).unwrap();
        assert_eq!(e.keyid, "main");
        let e = ExpectSignature::parse(b"sig").unwrap();
        assert_eq!(e.keyid, "root");
        assert_eq!(e.alg, ALG);
    }

    #[test]
    fn fast_path_agrees_with_the_parser() {
        for keyid in ["main", "root", "key-2024.1", ""] {
            let header = format!(r#"sig, keyid="{keyid}", alg="rsa-v1_5-sha256""#);
            let fast = ExpectSignature::parse(header.as_bytes()).unwrap();
            // The same value with insignificant spacing goes through the full parser.
            let slow =
                ExpectSignature::parse(format!(r#"sig,  keyid="{keyid}",alg="rsa-v1_5-sha256""#).as_bytes()).unwrap();
            assert_eq!(fast, slow, "{header}");
        }
        // Escapes are not for the fast path.
        let escaped = ExpectSignature::parse(br#"sig, keyid="a\"b", alg="rsa-v1_5-sha256""#).unwrap();
        assert_eq!(escaped.keyid, "a\"b");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            ExpectSignature::parse(b"sig,,,=").unwrap_err(),
            ExpectSignatureError::NotADictionary
        );
        assert_eq!(
            ExpectSignature::parse(b"sig, keyid=main").unwrap_err(),
            ExpectSignatureError::NotAString("keyid")
        );
        assert!(matches!(
            ExpectSignature::parse(br#"sig, alg="ecdsa""#),
            Err(ExpectSignatureError::UnsupportedAlg(_))
        ));
    }

    #[test]
    fn header_is_a_dictionary_of_strings() {
        let s = CodeSignature::new("AAEC".into(), "main".into()).unwrap();
        assert_eq!(s.header_value(), r#"sig="AAEC", keyid="main", alg="rsa-v1_5-sha256""#);
        assert!(CodeSignature::new("AAEC".into(), "é".into()).is_err());
        assert!(CodeSignature::new("AAE".into(), "main".into()).is_err());
        assert!(CodeSignature::new("AA-_".into(), "main".into()).is_err());
        let parsed: Dictionary = Parser::new(s.header_value().as_bytes()).parse().unwrap();
        for (_, member) in parsed {
            let ListEntry::Item(item) = member else {
                panic!("inner list")
            };
            assert!(matches!(item.bare_item, BareItem::String(_)));
        }
    }
}
