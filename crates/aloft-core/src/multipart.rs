//! `multipart/mixed` response bodies (RFC 2046), written by hand: a handful of parts, CRLF line
//! ends, parts named through `content-disposition: form-data; name="…"`.

/// One part of a response.
pub struct Part<'a> {
    /// `manifest`, `directive`, `extensions` or `certificate_chain`.
    pub name: &'a str,
    pub content_type: &'a str,
    /// Value of the part's `expo-signature` header, when signed.
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// A boundary that does not occur in any of the bodies.
pub fn boundary_for(parts: &[Part<'_>]) -> String {
    let mut n: u64 = 0;
    loop {
        let candidate = format!("aloft-{:016x}{:08x}", rand::random::<u64>(), n);
        let needle = candidate.as_bytes();
        if parts.iter().all(|p| !p.body.windows(needle.len()).any(|w| w == needle)) {
            return candidate;
        }
        n += 1;
    }
}

/// The response `content-type` for `boundary`.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

/// The whole body: each part, then the closing delimiter.
pub fn encode(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.body.len() + 256).sum());
    for part in parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(part.content_type.as_bytes());
        out.extend_from_slice(b"\r\ncontent-disposition: form-data; name=\"");
        out.extend_from_slice(part.name.as_bytes());
        out.extend_from_slice(b"\"\r\n");
        if let Some(sig) = part.signature {
            out.extend_from_slice(b"expo-signature: ");
            out.extend_from_slice(sig.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        let body = encode(
            "B",
            &[Part {
                name: "manifest",
                content_type: "application/json; charset=utf-8",
                signature: Some(r#"sig="AA==", keyid="main", alg="rsa-v1_5-sha256""#),
                body: b"{}",
            }],
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "--B\r\ncontent-type: application/json; charset=utf-8\r\ncontent-disposition: form-data; name=\"manifest\"\r\nexpo-signature: sig=\"AA==\", keyid=\"main\", alg=\"rsa-v1_5-sha256\"\r\n\r\n{}\r\n--B--\r\n"
        );
    }

    #[test]
    fn boundary_never_in_body() {
        let parts = [Part {
            name: "manifest",
            content_type: "x",
            signature: None,
            body: b"aloft-",
        }];
        let b = boundary_for(&parts);
        assert!(b.starts_with("aloft-") && b.len() > 20);
        assert_eq!(content_type(&b), format!("multipart/mixed; boundary={b}"));
    }
}
