//! Content types by file extension, for the manifest `contentType` field and asset responses.

/// The `contentType` of a launch asset: eas-cli and the reference server both use this, also for
/// Hermes bytecode.
pub const LAUNCH_ASSET: &str = "application/javascript";

/// Content type for an extension given without its leading dot (`png`, `ttf`, `bundle`).
pub fn for_extension(ext: &str) -> &'static str {
    match ext.to_ascii_lowercase().as_str() {
        "bundle" | "js" | "hbc" | "mjs" | "cjs" => LAUNCH_ASSET,
        "json" | "map" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "txt" => "text/plain",
        "xml" => "application/xml",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "lottie" | "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Whether precompressing a file of this type is worth trying. Already-compressed media is skipped.
pub fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "application/octet-stream"
                | "image/svg+xml"
                | "image/bmp"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
        )
}

/// A file extension as it may appear in a manifest and an asset URL: 1-16 ASCII alphanumerics.
pub fn is_valid_extension(ext: &str) -> bool {
    (1..=16).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_types() {
        assert_eq!(for_extension("png"), "image/png");
        assert_eq!(for_extension("PNG"), "image/png");
        assert_eq!(for_extension("bundle"), "application/javascript");
        assert_eq!(for_extension("weird"), "application/octet-stream");
        assert!(is_compressible("application/javascript"));
        assert!(!is_compressible("image/png"));
        assert!(is_valid_extension("woff2"));
        assert!(!is_valid_extension("a/b"));
        assert!(!is_valid_extension(""));
    }
}
