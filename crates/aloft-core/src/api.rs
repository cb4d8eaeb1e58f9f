//! JSON bodies of the management API, shared by the server and the CLI's client.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::hash::ContentHash;
use crate::platform::Platform;
use crate::signature::CodeSignature;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub slug: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AppInfo {
    pub slug: String,
    pub default_channel: String,
    pub manifest_url: String,
    pub server_signing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSigningKey {
    /// PKCS#1 or PKCS#8 PEM.
    pub private_key_pem: String,
    pub keyid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MissingBlobsRequest {
    pub hashes: Vec<ContentHash>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MissingBlobsResponse {
    pub missing: Vec<ContentHash>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BlobInfo {
    pub hash: ContentHash,
    pub md5: String,
    pub size: u64,
}

/// A file of an update: the blob it is and the extension it is served with (no dot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub hash: ContentHash,
    pub ext: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformUpdate {
    pub platform: Platform,
    pub runtime_version: String,
    pub launch_asset: FileRef,
    #[serde(default)]
    pub assets: Vec<FileRef>,
}

/// What a `?prepare=true` call fixed (ids, `createdAt`), and the publisher's signatures over
/// the bodies it returned. The server rebuilds the bodies and checks each one's SHA-256 against
/// `sha256`, so a signature is never stored beside bytes other than the ones it signs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitInfo {
    pub group_id: Uuid,
    pub created_at: String,
    pub updates: Vec<CommitUpdate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitUpdate {
    pub platform: Platform,
    pub runtime_version: String,
    pub id: Uuid,
    /// Lower-case hex SHA-256 of the body that was signed.
    pub sha256: String,
    #[serde(default)]
    pub signature: Option<CodeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    /// Start a rollout of this group to this share of devices (0-100).
    #[serde(default)]
    pub rollout_percentage: Option<u8>,
    /// Publish even though the branch has a rollout in progress (which is then completed).
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
}

/// The bodies an operation is about to store, for the publisher to sign.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PreparedGroup {
    pub group_id: Uuid,
    pub created_at: String,
    /// Empty when the operation creates no updates (then nothing needs signing).
    pub updates: Vec<PreparedUpdate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PreparedUpdate {
    pub platform: Platform,
    pub id: Uuid,
    pub runtime_version: String,
    /// `manifest` or `directive`.
    pub kind: String,
    /// The exact body text that will be served: sign these bytes.
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PublishedUpdate {
    pub platform: Platform,
    pub id: Uuid,
    pub runtime_version: String,
    pub signed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PublishedGroup {
    pub group_id: Uuid,
    pub created_at: String,
    pub branch: String,
    pub message: String,
    pub manifest_url: String,
    #[serde(default)]
    pub rollout_percentage: Option<u8>,
    pub updates: Vec<PublishedUpdate>,
}

/// The answer of every release operation: what happened, and the group it published, if any.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    pub summary: String,
    #[serde(default)]
    pub published: Option<PublishedGroup>,
}

/// Body of operations that may publish (and so may need the publisher's signatures).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedOperation {
    #[serde(default)]
    pub commit: Option<CommitInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepublishRequest {
    /// Where to republish: a channel's branch or a branch; default, the group's own branch.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub channel: String,
    /// Roll back to the build's embedded update instead of the previous group.
    #[serde(default)]
    pub to_embedded: bool,
    /// With `to_embedded`: only this runtime version (default: every one the channel serves).
    #[serde(default)]
    pub runtime_version: Option<String>,
    /// With `to_embedded`: only this platform (default: both).
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRollout {
    pub percentage: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    pub name: String,
    /// Default: a branch of the channel's name (created if needed).
    #[serde(default)]
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditChannel {
    pub branch: String,
}

/// A channel's branch rollout: start it (`branch` and `percentage`), change its `percentage`,
/// `end` it (the channel then points at the new branch) or `revert` it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "action")]
pub enum ChannelRolloutAction {
    Start { branch: String, percentage: u8 },
    Set { percentage: u8 },
    End,
    Revert,
}

/// (serde cannot deny unknown fields next to a flattened enum; the action's own fields are still
/// checked.)
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChannelRolloutRequest {
    #[serde(flatten)]
    pub action: ChannelRolloutAction,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChannelInfo {
    pub name: String,
    pub branch: String,
    #[serde(default)]
    pub rollout: Option<ChannelRolloutInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChannelRolloutInfo {
    pub branch: String,
    pub percentage: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBranch {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BranchInfo {
    pub name: String,
    pub created_at: String,
    pub groups: i64,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GroupInfo {
    pub id: Uuid,
    pub branch: String,
    /// `update` or `rollback` (to embedded).
    pub kind: String,
    pub message: String,
    pub created_at: String,
    pub published_by: String,
    #[serde(default)]
    pub rollout_percentage: Option<u8>,
    #[serde(default)]
    pub republished_from: Option<Uuid>,
    /// Why the group is no longer served (`disabled`, `rollout_reverted`), if it is not.
    #[serde(default)]
    pub disabled: Option<String>,
    pub updates: Vec<GroupUpdateInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GroupUpdateInfo {
    pub platform: Platform,
    pub id: Uuid,
    pub runtime_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// `admin`, `publish` or `read`.
    pub scope: String,
    /// The apps a `publish` or `read` token may see.
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub apps: Vec<String>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedToken {
    pub token: TokenInfo,
    /// Shown once; only a hash is stored.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    pub at: String,
    pub actor: String,
    #[serde(default)]
    pub app: Option<String>,
    pub action: String,
    pub target: String,
    pub details: Value,
    pub remote: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Unreferenced blobs younger than this are kept (default one day).
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GcResult {
    pub removed: Vec<ContentHash>,
    /// Partial files of interrupted uploads (older than the grace period) that were removed.
    #[serde(default)]
    pub leftovers_removed: u64,
}
