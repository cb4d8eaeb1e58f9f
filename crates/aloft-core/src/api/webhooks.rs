//! The webhook bodies of the management API, and the payload a webhook receives.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where the events are POSTed: an `http://` or `https://` URL.
    pub url: String,
    /// What to send: any of `publish`, `rollout`, `halt`, `rollback`, `disable`.
    pub events: Vec<String>,
    /// The HMAC-SHA256 key the payloads are signed with; made (and shown once) when not given.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookInfo {
    pub id: i64,
    pub app: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedWebhook {
    pub webhook: WebhookInfo,
    /// The signing secret; shown only in this answer.
    pub secret: String,
}

/// One event sent (or being sent) to one webhook, with every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookDelivery {
    /// The `aloft-delivery` header and the payload's `id`.
    pub id: Uuid,
    pub webhook_id: i64,
    pub event: String,
    /// When the event happened.
    pub occurred_at: String,
    /// `pending` (being tried), `delivered` (a 2xx answer) or `failed` (no 2xx within a day).
    pub state: String,
    /// When a pending delivery is tried next.
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    /// Oldest first.
    pub attempts: Vec<WebhookAttempt>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookAttempt {
    pub attempt: i64,
    pub at: String,
    /// The receiver's HTTP status; absent when none came back.
    #[serde(default)]
    pub status: Option<u16>,
    /// Why the attempt failed: a non-2xx status, a timeout, no connection.
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What a webhook receives: the JSON body of every delivery, signed in `aloft-signature`. Fields
/// are only ever added, never renamed or removed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookPayload {
    /// The delivery id, as in the `aloft-delivery` header: the same on every retry of one
    /// delivery, so a receiver can drop repeats.
    pub id: Uuid,
    /// `publish`, `rollout`, `halt`, `rollback` or `disable`, as in the `aloft-event` header.
    pub event: String,
    /// The app's slug.
    pub app: String,
    /// When the change committed (ISO 8601, UTC, milliseconds).
    pub occurred_at: String,
    /// Who made it: a token's name and id, or a job of the server.
    pub actor: String,
    /// The audit log's action: `publish`, `republish`, `rollout.set`, `rollout.complete`,
    /// `rollout.revert`, `rollout.halt`, `channel.rollout`, `rollback`, `rollback.embedded`,
    /// `group.disable`.
    pub action: String,
    /// What it was done to: a channel, a branch or a group id.
    pub target: String,
    /// What happened, in a sentence.
    pub summary: String,
    /// The audit entry's details (for `halt`, the figures that halted it).
    pub details: Value,
    /// One line for a chat message: `[app] event by actor: summary`.
    pub text: String,
}
