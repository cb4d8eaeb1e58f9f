//! Bundle patches and the embedded bundles they may start from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::ContentHash;
use crate::platform::Platform;

pub(super) fn on() -> bool {
    true
}

/// Turns an app's bundle patches on or off.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPatches {
    pub enabled: bool,
}

/// Registers a store build's embedded bundle, already uploaded as a blob.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddEmbedded {
    /// The embedded update's id (`id` of the build's `app.manifest`).
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: String,
    /// The bundle's blob.
    pub bundle: ContentHash,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddedInfo {
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: String,
    pub bundle: ContentHash,
    /// The bundle's size in bytes.
    pub size: u64,
    pub created_at: String,
}

/// One patch of an update's launch asset.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PatchInfo {
    /// The update (or embedded update) whose bundle the patch applies to.
    pub base: Uuid,
    /// `update` or `embedded`.
    pub base_kind: String,
    /// `pending`, `done` (served), `not_worth_it` (not enough smaller than the compressed
    /// bundle) or `failed`.
    pub state: String,
    /// The patch's size in bytes, once computed.
    #[serde(default)]
    pub size: Option<u64>,
    /// What a device downloads without the patch: the bundle's brotli size.
    #[serde(default)]
    pub full_size: Option<u64>,
    /// How often the patch was served.
    pub hits: u64,
    /// Bytes devices did not download thanks to it: hits × (full size − patch size).
    pub bytes_saved: u64,
}
