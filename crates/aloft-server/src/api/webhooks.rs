//! Webhooks of an app: list, add, remove, and the delivery log.

use aloft_core::api::{CreateWebhook, CreatedWebhook, WebhookAttempt, WebhookDelivery, WebhookInfo};
use aloft_store::db::webhooks::{self, Webhook};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;

use super::grant::{AppRead, AppWrite};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::service::webhooks as service;
use crate::state::AppState;

fn webhook_info(w: Webhook, app: &str) -> WebhookInfo {
    WebhookInfo {
        id: w.id,
        app: app.to_owned(),
        url: w.url,
        events: w.events,
        created_at: w.created_at.to_iso(),
    }
}

pub(super) async fn list_webhooks(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
) -> Result<Json<Vec<WebhookInfo>>, ApiError> {
    let hooks = webhooks::list(&state.db, app.id).await?;
    Ok(Json(
        hooks.into_iter().map(|w| webhook_info(w, app.slug.as_str())).collect(),
    ))
}

pub(super) async fn add_webhook(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let (hook, secret) = service::add_webhook(
        &state,
        &caller.actor(),
        &app,
        &req.url,
        &req.events,
        req.secret.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: webhook_info(hook, app.slug.as_str()),
            secret,
        }),
    ))
}

/// `/apps/{slug}/webhooks/{webhook}`: a struct, so that a refusal can name the segment.
#[derive(Debug, Deserialize)]
pub(super) struct WebhookPath {
    webhook: i64,
}

pub(super) async fn remove_webhook(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath(WebhookPath { webhook }): ApiPath<WebhookPath>,
) -> Result<StatusCode, ApiError> {
    service::remove_webhook(&state, &caller.actor(), &app, webhook).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveriesQuery {
    /// Only this webhook's deliveries.
    webhook: Option<i64>,
    /// How many, newest first (1 to 1000, default 50).
    limit: Option<i64>,
}

pub(super) async fn list_deliveries(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let found = webhooks::deliveries(&state.db, app.id, q.webhook, limit).await?;
    Ok(Json(
        found
            .into_iter()
            .map(|d| WebhookDelivery {
                id: d.id,
                webhook_id: d.webhook_id,
                event: d.event,
                occurred_at: d.occurred_at.to_iso(),
                next_attempt_at: (d.state == "pending").then(|| d.next_at.to_iso()),
                state: d.state,
                attempts: d
                    .attempts
                    .into_iter()
                    .zip(1..)
                    .map(|(a, attempt)| WebhookAttempt {
                        attempt,
                        at: a.at.to_iso(),
                        status: a.status,
                        error: a.error,
                        duration_ms: a.duration_ms,
                    })
                    .collect(),
            })
            .collect(),
    ))
}
