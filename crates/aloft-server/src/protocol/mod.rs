//! What devices call: the manifest endpoint and the asset endpoint (docs/protocol.md §1-§5).
//!
//! The device routes are defined here once: the router registers these patterns, and the fast
//! lanes (`conn/`) recognise a manifest path with [`manifest_slug`]. Requests on these routes,
//! from every lane, are answered and recorded through `device.rs`.

pub(crate) mod assets;
pub(crate) mod bytes_cache;
pub(crate) mod manifest;
pub(crate) mod patches;

use axum::http::{HeaderName, header};

/// Device request headers read by name on an asset download (docs/protocol.md §1.2, §9).
pub(crate) static A_IM: HeaderName = HeaderName::from_static("a-im");
pub(crate) static REQUESTED_UPDATE_ID: HeaderName = HeaderName::from_static("expo-requested-update-id");
pub(crate) static CURRENT_UPDATE_ID: HeaderName = HeaderName::from_static("expo-current-update-id");
pub(crate) static EMBEDDED_UPDATE_ID: HeaderName = HeaderName::from_static("expo-embedded-update-id");
pub(crate) static EAS_CLIENT_ID: HeaderName = HeaderName::from_static("eas-client-id");

/// Every request header an asset download is answered from: the encoding, range and
/// revalidation (`assets.rs`), a bundle patch's negotiation (`patches.rs`, `device.rs`) and the
/// install the device hook records (`device.rs`). The wire lane passes only these on (building
/// a map of all of a device's headers was most of its allocations); hyper passes them all, so a
/// header read on an asset request anywhere else must be added here.
pub(crate) static ASSET_REQUEST_HEADERS: [&HeaderName; 8] = [
    &header::ACCEPT_ENCODING,
    &header::RANGE,
    &header::IF_NONE_MATCH,
    &A_IM,
    &REQUESTED_UPDATE_ID,
    &CURRENT_UPDATE_ID,
    &EMBEDDED_UPDATE_ID,
    &EAS_CLIENT_ID,
];

/// The update check, as the router names it (also its `route` label in metrics).
pub(crate) const MANIFEST_ROUTE: &str = "/apps/{slug}/manifest";
/// Asset downloads, content-addressed: `/assets/{sha256}.{ext}`.
pub(crate) const ASSET_ROUTE: &str = "/assets/{file}";

/// The slug of a manifest path in the shape devices send: `/apps/{slug}/manifest` with a slug of
/// plain name characters (ASCII letters, digits, `-`, `_`), no query string in `path`. The fast
/// lanes answer only such paths; anything else on the route (a percent-encoded slug, a query
/// string in a raw request target) is the router's, which answers through the same hook.
pub(crate) fn manifest_slug(path: &str) -> Option<&str> {
    let slug = path.strip_prefix("/apps/")?.strip_suffix("/manifest")?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    (!slug.is_empty() && slug.bytes().all(plain)).then_some(slug)
}

/// The file a plain asset path (`/assets/{file}`) names: only the characters asset names are made
/// of, so no percent-encoding, query or further segment. The fast lanes take only these; the
/// router answers every other spelling the same way.
pub(crate) fn asset_file(path: &str) -> Option<&str> {
    let file = path.strip_prefix("/assets/")?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    (!file.is_empty() && file.bytes().all(plain)).then_some(file)
}

#[cfg(test)]
mod tests {
    use super::{asset_file, manifest_slug};

    #[test]
    fn only_plain_manifest_paths_take_a_fast_lane() {
        assert_eq!(manifest_slug("/apps/my-app_2/manifest"), Some("my-app_2"));
        for other in [
            "/apps//manifest",
            "/apps/a%2Fb/manifest",
            "/apps/a/b/manifest",
            "/apps/a/manifest?platform=ios",
            "/apps/a/manifest/",
            "/apps/a.b/manifest",
            "/assets/x.png",
        ] {
            assert_eq!(manifest_slug(other), None, "{other}");
        }
    }

    #[test]
    fn only_plain_asset_paths_take_a_fast_lane() {
        assert_eq!(asset_file("/assets/AbC-_9.bundle"), Some("AbC-_9.bundle"));
        assert_eq!(asset_file("/assets/AbC"), Some("AbC"));
        for other in [
            "/assets/",
            "/assets/a%2Eb",
            "/assets/a/b.png",
            "/assets/a.png?x=1",
            "/assets",
            "/apps/a/manifest",
        ] {
            assert_eq!(asset_file(other), None, "{other}");
        }
    }
}
