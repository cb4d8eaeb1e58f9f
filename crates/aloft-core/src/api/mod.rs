//! JSON bodies of the management API, shared by the server and the CLI's client.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::hash::ContentHash;
use crate::platform::Platform;
use crate::signature::CodeSignature;

mod insights;
mod patches;
mod users;
mod webhooks;

pub use crate::halt::HaltPolicy;
pub use insights::{
    DailyInsights, FatalErrorCount, FleetInsights, GroupInsights, PlatformInsights, RolloutFigures, RolloutStatus,
    RuntimeFleet, SetHaltPolicy, UnknownChannel, UpdateShare,
};
pub use patches::{AddEmbedded, EmbeddedInfo, PatchInfo, SetPatches};
pub use users::{CreateUser, UserInfo, UserSignInLink};
pub use webhooks::{CreateWebhook, CreatedWebhook, WebhookAttempt, WebhookDelivery, WebhookInfo, WebhookPayload};

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
    /// When the app's rollouts halt by themselves, unless a rollout says otherwise; null when
    /// they never do.
    #[serde(default)]
    pub halt_policy: Option<HaltPolicy>,
    /// Whether devices are sent bsdiff patches of the launch asset when they ask (`A-IM:
    /// bsdiff`) and one is stored; on unless turned off.
    #[serde(default = "patches::on")]
    pub patches: bool,
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
    #[schemars(range(max = 100))]
    pub rollout_percentage: Option<u8>,
    /// Halt the rollout by itself when its update fails on too many devices (default: the
    /// app's policy, else 5 % once 50 devices installed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_policy: Option<HaltPolicy>,
    /// Never halt this rollout by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_halt: bool,
    /// Publish even though the branch has a rollout in progress (which is then completed).
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
    /// Store the updates unsigned even though the app's earlier updates were signed (its
    /// devices may then refuse them). Without it such a commit is refused.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// Asks whether a publish would be refused for where it goes (an invalid channel or branch, a
/// channel rollout, a group rollout in progress), before any file is uploaded. Changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishCheckRequest {
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// The platforms and runtime versions the publish will have.
    pub updates: Vec<PublishTarget>,
    /// The publish will be forced (a group rollout in progress is then no obstacle).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishTarget {
    pub platform: Platform,
    pub runtime_version: String,
}

/// A publish to that target would not be refused for it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PublishCheck {
    /// The branch the publish would land on (it may not exist yet).
    pub branch: String,
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
    /// Store the updates unsigned even though the app's earlier updates were signed (its
    /// devices may then refuse them). Without it such a commit is refused.
    #[serde(default)]
    pub allow_unsigned: bool,
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
    /// Store the updates unsigned even though the app's earlier updates were signed (its
    /// devices may then refuse them). Without it such a commit is refused.
    #[serde(default)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub channel: String,
    /// Roll back to the build's embedded update instead of the previous group.
    #[serde(default)]
    pub to_embedded: bool,
    /// Only this runtime version (default: every one the channel serves).
    #[serde(default)]
    pub runtime_version: Option<String>,
    /// Only this platform (default: both).
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
    /// Store the updates unsigned even though the app's earlier updates were signed (its
    /// devices may then refuse them). Without it such a commit is refused.
    #[serde(default)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRollout {
    #[schemars(range(max = 100))]
    pub percentage: u8,
    /// Halt the rollout by itself when its update fails on too many devices (default: the
    /// app's policy, else 5 % once 50 devices installed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_policy: Option<HaltPolicy>,
    /// Never halt this rollout by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_halt: bool,
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
    Start {
        branch: String,
        #[schemars(range(max = 100))]
        percentage: u8,
    },
    Set {
        #[schemars(range(max = 100))]
        percentage: u8,
    },
    End,
    Revert,
}

/// On the wire the action's fields sit beside `commit` in one object. It is read through a flat
/// form (see the `Deserialize` impl) rather than serde's `flatten`, so that unknown fields are
/// refused and an error names the field it is about.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChannelRolloutRequest {
    #[serde(flatten)]
    pub action: ChannelRolloutAction,
    /// With `start` or `set`: when the rollout halts by itself (default: the app's policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_policy: Option<HaltPolicy>,
    /// With `start` or `set`: never halt this rollout by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_halt: bool,
    #[serde(default)]
    pub commit: Option<CommitInfo>,
    /// Store the updates unsigned even though the app's earlier updates were signed (its
    /// devices may then refuse them). Without it such a commit is refused.
    #[serde(default)]
    pub allow_unsigned: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChannelRolloutActionName {
    Start,
    Set,
    End,
    Revert,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatChannelRolloutRequest {
    action: ChannelRolloutActionName,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    percentage: Option<u8>,
    #[serde(default)]
    halt_policy: Option<HaltPolicy>,
    #[serde(default)]
    no_halt: bool,
    #[serde(default)]
    commit: Option<CommitInfo>,
    #[serde(default)]
    allow_unsigned: bool,
}

impl<'de> Deserialize<'de> for ChannelRolloutRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let flat = FlatChannelRolloutRequest::deserialize(d)?;
        use ChannelRolloutActionName as Name;
        const SET: &[&str] = &[
            "action",
            "percentage",
            "halt_policy",
            "no_halt",
            "commit",
            "allow_unsigned",
        ];
        const END: &[&str] = &["action", "commit", "allow_unsigned"];
        let halting = flat.halt_policy.is_some() || flat.no_halt;
        if halting && matches!(flat.action, Name::End | Name::Revert) {
            let field = if flat.no_halt { "no_halt" } else { "halt_policy" };
            return Err(D::Error::unknown_field(field, END));
        }
        let action = match (flat.action, flat.branch, flat.percentage) {
            (Name::Start, Some(branch), Some(percentage)) => ChannelRolloutAction::Start { branch, percentage },
            (Name::Start, None, _) => return Err(D::Error::missing_field("branch")),
            (Name::Start | Name::Set, _, None) => return Err(D::Error::missing_field("percentage")),
            (Name::Set, None, Some(percentage)) => ChannelRolloutAction::Set { percentage },
            (Name::Set, Some(_), _) => return Err(D::Error::unknown_field("branch", SET)),
            (Name::End, None, None) => ChannelRolloutAction::End,
            (Name::Revert, None, None) => ChannelRolloutAction::Revert,
            (Name::End | Name::Revert, branch, _) => {
                let field = if branch.is_some() { "branch" } else { "percentage" };
                return Err(D::Error::unknown_field(field, END));
            }
        };
        Ok(Self {
            action,
            halt_policy: flat.halt_policy,
            no_halt: flat.no_halt,
            commit: flat.commit,
            allow_unsigned: flat.allow_unsigned,
        })
    }
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
    /// Patches of this update's launch asset from earlier updates and embedded bundles, with
    /// their sizes and how often they were served (only when showing one group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<PatchInfo>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rollout_requests_round_trip_and_refuse_stray_fields() {
        for action in [
            ChannelRolloutAction::Start {
                branch: "next".into(),
                percentage: 10,
            },
            ChannelRolloutAction::Set { percentage: 20 },
            ChannelRolloutAction::End,
            ChannelRolloutAction::Revert,
        ] {
            let text = serde_json::to_string(&ChannelRolloutRequest {
                action: action.clone(),
                halt_policy: None,
                no_halt: false,
                commit: None,
                allow_unsigned: true,
            })
            .unwrap_or_default();
            let back: ChannelRolloutRequest = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(back.allow_unsigned, "{text}");
            assert_eq!(
                serde_json::to_value(&back.action).ok(),
                serde_json::to_value(&action).ok(),
                "{text}"
            );
        }
        for (bad, why) in [
            (r#"{"action":"start","percentage":5}"#, "missing field `branch`"),
            (r#"{"action":"set"}"#, "missing field `percentage`"),
            (
                r#"{"action":"set","percentage":5,"branch":"x"}"#,
                "unknown field `branch`",
            ),
            (r#"{"action":"end","percentage":5}"#, "unknown field `percentage`"),
            (r#"{"action":"revert","extra":1}"#, "unknown field `extra`"),
            (r#"{"action":"grow"}"#, "unknown variant `grow`"),
        ] {
            let err = serde_json::from_str::<ChannelRolloutRequest>(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }
}
