use aloft_core::api::{GroupInfo, GroupUpdateInfo};
use aloft_store::db::updates::{self, Group};
use aloft_store::db::{channels, patches};
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use super::grant::AppRead;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

pub(super) fn group_info(g: Group) -> GroupInfo {
    GroupInfo {
        id: g.id,
        branch: g.branch,
        kind: g.kind.as_str().to_owned(),
        message: g.message,
        created_at: g.created_at.to_iso(),
        published_by: g.published_by,
        rollout_percentage: g.rollout.map(|r| r.percentage),
        republished_from: g.republished_from,
        disabled: g.disabled.map(|(_, reason)| reason),
        updates: g
            .updates
            .into_iter()
            .map(|u| GroupUpdateInfo {
                platform: u.platform,
                id: u.id,
                runtime_version: u.runtime_version.to_string(),
                patches: Vec::new(),
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    branch: Option<String>,
    channel: Option<String>,
    limit: Option<i64>,
}

/// Update groups, newest first; of a branch, or of the branch a channel points at.
pub(super) async fn list_groups(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<GroupInfo>>, ApiError> {
    let mut conn = state.db.conn().await?;
    let branch_id = match (&q.branch, &q.channel) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give branch or channel, not both",
            ));
        }
        (Some(b), None) => Some(channels::branch_id(&mut conn, app.id, b).await?),
        (None, Some(c)) => Some(channels::get(&mut conn, app.id, c).await?.branch_id),
        (None, None) => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let groups = updates::list_groups(&mut conn, app.id, branch_id, limit).await?;
    Ok(Json(groups.into_iter().map(group_info).collect()))
}

pub(super) async fn show_group(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<GroupInfo>, ApiError> {
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::not_found("group_not_found", "no update group with that id"))?;
    let mut conn = state.db.conn().await?;
    let group = updates::group(&mut conn, app.id, id).await?;
    drop(conn);
    let ids: Vec<Uuid> = group.updates.iter().map(|u| u.id).collect();
    let found = patches::to_updates(&state.db, &ids).await?;
    let mut info = group_info(group);
    for update in &mut info.updates {
        update.patches = found
            .iter()
            .filter(|p| p.target == update.id)
            .map(super::patches::patch_info)
            .collect();
    }
    Ok(Json(info))
}
