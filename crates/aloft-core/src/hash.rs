//! Content identities: the SHA-256 an asset is addressed and verified by, and the MD5 key the
//! client de-duplicates assets by (docs/protocol.md §5).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 of an asset's bytes. Displayed as unpadded base64url (43 characters), which is both
/// the manifest `hash` field and the asset URL path segment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as `sha256sum` prints it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 43 base64url characters; anything else (padding, `/`, `..`) is refused,
    /// so a parsed hash is always safe to use as a storage key.
    pub fn parse(s: &str) -> Result<Self, InvalidHash> {
        if s.len() != 43 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(InvalidHash(s.chars().take(80).collect()));
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| InvalidHash(s.to_owned()))?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| InvalidHash(s.to_owned()))?;
        // Reject non-canonical encodings (non-zero trailing bits) so one hash has one spelling.
        if URL_SAFE_NO_PAD.encode(digest) != s {
            return Err(InvalidHash(s.to_owned()));
        }
        Ok(Self(digest))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = InvalidHash;
    fn from_str(s: &str) -> Result<Self, InvalidHash> {
        Self::parse(s)
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ContentHash {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ContentHash".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Unpadded base64url SHA-256 of the bytes (43 characters)",
            "pattern": "^[A-Za-z0-9_-]{43}$"
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a content hash (43 characters of unpadded base64url SHA-256): {0:?}")]
pub struct InvalidHash(pub String);

/// Lower-case hex MD5 of an asset's bytes: the manifest `key`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Md5Key([u8; 16]);

impl Md5Key {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Md5::digest(bytes).into())
    }

    pub fn from_digest(digest: [u8; 16]) -> Self {
        Self(digest)
    }

    pub fn parse(s: &str) -> Result<Self, InvalidHash> {
        let mut out = [0u8; 16];
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(InvalidHash(s.to_owned()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidHash(s.to_owned()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5Key({self})")
    }
}

/// Both digests of one stream of bytes, computed in one pass.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    md5: Md5,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.md5.update(chunk);
        self.len += chunk.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (ContentHash, Md5Key, u64) {
        (
            ContentHash(self.sha.finalize().into()),
            Md5Key(self.md5.finalize().into()),
            self.len,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_vectors() {
        // From docs/protocol.md §5 conventions: sha256("") and md5("").
        assert_eq!(
            ContentHash::of(b"").to_string(),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(Md5Key::of(b"").to_string(), "d41d8cd98f00b204e9800998ecf8427e");
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        let (sha, md5, len) = h.finish();
        assert_eq!(sha, ContentHash::of(b"hello world"));
        assert_eq!(md5, Md5Key::of(b"hello world"));
        assert_eq!(len, 11);
    }

    #[test]
    fn parse_round_trips_and_rejects_unsafe_input() {
        let h = ContentHash::of(b"x");
        assert_eq!(ContentHash::parse(&h.to_string()).unwrap(), h);
        for bad in [
            "",
            "../../../../etc/passwd",
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFV", // non-canonical trailing bits
            "..DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
        ] {
            assert!(ContentHash::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Md5Key::parse("D41D8CD98F00B204E9800998ECF8427E").is_err());
        assert!(Md5Key::parse("d41d8cd98f00b204e9800998ecf8427e").is_ok());
    }
}
