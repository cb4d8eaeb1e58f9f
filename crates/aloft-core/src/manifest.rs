//! The manifest body (docs/protocol.md §2.4). Built once, at publish; its exact bytes are what is
//! signed and what every device receives, so serialisation here must be deterministic.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::content_type;
use crate::hash::{ContentHash, Md5Key};
use crate::names::RuntimeVersion;
use crate::time::Millis;

/// One file of an update as the server knows it after verifying its upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRef {
    pub hash: ContentHash,
    pub key: Md5Key,
    /// Without the leading dot: `png`, `bundle`.
    pub ext: String,
}

impl AssetRef {
    /// The URL path segment under the asset base: `<sha256>.<ext>`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.hash, self.ext)
    }
}

/// Everything a manifest is made of.
#[derive(Debug, Clone)]
pub struct ManifestInput<'a> {
    pub id: Uuid,
    pub created_at: Millis,
    pub runtime_version: &'a RuntimeVersion,
    /// The launch asset; its extension is always served as `.bundle`.
    pub launch_asset: &'a AssetRef,
    pub assets: &'a [AssetRef],
    pub metadata: &'a Map<String, Value>,
    /// The public app config (`npx expo config --type public --json`), served as `extra.expoClient`.
    pub expo_client: Option<&'a Value>,
    /// Absolute URL prefix of the asset route, ending in `/`.
    pub asset_base_url: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    id: String,
    created_at: String,
    runtime_version: &'a str,
    launch_asset: Asset,
    assets: Vec<Asset>,
    metadata: &'a Map<String, Value>,
    extra: Extra<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Asset {
    hash: String,
    key: String,
    content_type: &'static str,
    file_extension: String,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Extra<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    expo_client: Option<&'a Value>,
}

impl Asset {
    fn new(asset: &AssetRef, content_type: &'static str, base: &str) -> Self {
        Asset {
            hash: asset.hash.to_string(),
            key: asset.key.to_string(),
            content_type,
            file_extension: format!(".{}", asset.ext),
            url: format!("{base}{}", asset.file_name()),
        }
    }
}

/// The exact manifest bytes: compact JSON, fields in a fixed order.
pub fn build(input: &ManifestInput<'_>) -> Vec<u8> {
    let launch = AssetRef {
        ext: "bundle".into(),
        ..input.launch_asset.clone()
    };
    let manifest = Manifest {
        id: input.id.hyphenated().to_string(),
        created_at: input.created_at.to_iso(),
        runtime_version: input.runtime_version.as_str(),
        launch_asset: Asset::new(&launch, content_type::LAUNCH_ASSET, input.asset_base_url),
        assets: input
            .assets
            .iter()
            .map(|a| Asset::new(a, content_type::for_extension(&a.ext), input.asset_base_url))
            .collect(),
        metadata: input.metadata,
        extra: Extra {
            expo_client: input.expo_client,
        },
    };
    // Serialising plain structs, strings and `Value`s cannot fail.
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// The `launchAsset.hash` of stored manifest bytes, if they name a valid one.
pub fn launch_asset_hash(body: &[u8]) -> Option<ContentHash> {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(rename = "launchAsset")]
        launch_asset: Launch,
    }
    #[derive(serde::Deserialize)]
    struct Launch {
        hash: String,
    }
    let stored: Stored = serde_json::from_slice(body).ok()?;
    ContentHash::parse(&stored.launch_asset.hash).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        let rv = RuntimeVersion::parse("1.0.0").unwrap();
        let bundle = AssetRef {
            hash: ContentHash::of(b"bundle"),
            key: Md5Key::of(b"bundle"),
            ext: "hbc".into(),
        };
        let png = AssetRef {
            hash: ContentHash::of(b"png"),
            key: Md5Key::of(b"png"),
            ext: "png".into(),
        };
        let config = serde_json::json!({"name": "demo", "slug": "demo"});
        let metadata = Map::new();
        let bytes = build(&ManifestInput {
            id: Uuid::parse_str("0f8a3c5e-9b1d-4e2f-8a7b-6c5d4e3f2a1b").unwrap(),
            created_at: Millis(1_714_566_896_789),
            runtime_version: &rv,
            launch_asset: &bundle,
            assets: std::slice::from_ref(&png),
            metadata: &metadata,
            expo_client: Some(&config),
            asset_base_url: "http://127.0.0.1:3000/assets/",
        });
        assert_eq!(launch_asset_hash(&bytes), Some(bundle.hash));
        assert_eq!(launch_asset_hash(b"{\"type\":\"rollBackToEmbedded\"}"), None);
        let expected = concat!(
            r#"{"id":"0f8a3c5e-9b1d-4e2f-8a7b-6c5d4e3f2a1b","createdAt":"2024-05-01T12:34:56.789Z","runtimeVersion":"1.0.0","#,
            r#""launchAsset":{"hash":"Hm7WXXfWNk7q7Vp0W6XEmFritwDdhdfPfwJ73ylKM_w","key":"94377c156735b39dfa4ac607234cb87c","contentType":"application/javascript","fileExtension":".bundle","url":"http://127.0.0.1:3000/assets/Hm7WXXfWNk7q7Vp0W6XEmFritwDdhdfPfwJ73ylKM_w.bundle"},"#,
            r#""assets":[{"hash":"j4y7fc9G4Lx9UyZXSabBfRFgk6a6leRCdkBgx2_UqGw","key":"bff139fa05ac583f685a523ab3d110a0","contentType":"image/png","fileExtension":".png","url":"http://127.0.0.1:3000/assets/j4y7fc9G4Lx9UyZXSabBfRFgk6a6leRCdkBgx2_UqGw.png"}],"#,
            r#""metadata":{},"extra":{"expoClient":{"name":"demo","slug":"demo"}}}"#
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }
}
