//! JSON bodies of the management API, shared by the server and the CLI's client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::hash::ContentHash;
use crate::platform::Platform;
use crate::signature::CodeSignature;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub slug: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppInfo {
    pub slug: String,
    pub default_channel: String,
    pub manifest_url: String,
    pub server_signing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSigningKey {
    /// PKCS#1 or PKCS#8 PEM.
    pub private_key_pem: String,
    pub keyid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingBlobsRequest {
    pub hashes: Vec<ContentHash>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingBlobsResponse {
    pub missing: Vec<ContentHash>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobInfo {
    pub hash: ContentHash,
    pub md5: String,
    pub size: u64,
}

/// A file of an update: the blob it is and the extension it is served with (no dot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub hash: ContentHash,
    pub ext: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformUpdate {
    pub platform: Platform,
    pub runtime_version: String,
    pub launch_asset: FileRef,
    #[serde(default)]
    pub assets: Vec<FileRef>,
}

/// Ids and timestamp fixed by a `prepare` call, with the signatures the publisher made over the
/// prepared manifests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitInfo {
    pub group_id: Uuid,
    pub created_at: String,
    pub update_ids: BTreeMap<Platform, Uuid>,
    #[serde(default)]
    pub signatures: BTreeMap<Platform, CodeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Publish to the branch this channel points at (created with its branch if new)...
    #[serde(default)]
    pub channel: Option<String>,
    /// ...or straight to a branch.
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub message: String,
    pub updates: Vec<PlatformUpdate>,
    /// The public app config, served as `extra.expoClient`.
    #[serde(default)]
    pub expo_client: Option<Value>,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedUpdate {
    pub platform: Platform,
    pub id: Uuid,
    pub runtime_version: String,
    /// The exact manifest text that will be served: sign these bytes.
    pub manifest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedGroup {
    pub group_id: Uuid,
    pub created_at: String,
    pub updates: Vec<PreparedUpdate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedUpdate {
    pub platform: Platform,
    pub id: Uuid,
    pub runtime_version: String,
    pub signed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedGroup {
    pub group_id: Uuid,
    pub created_at: String,
    pub message: String,
    pub manifest_url: String,
    pub updates: Vec<PublishedUpdate>,
}
