use aloft_core::ContentHash;
use aloft_core::api::{BlobInfo, GcRequest, GcResult, MissingBlobsRequest, MissingBlobsResponse};
use aloft_store::IngestError;
use aloft_store::db::blobs;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;

use super::grant::{Admin, Upload};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::blobs as service;
use crate::state::AppState;

/// Which of the given blobs the server does not have yet.
pub(super) async fn missing_blobs(
    _: Upload,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MissingBlobsRequest>,
) -> Result<Json<MissingBlobsResponse>, ApiError> {
    Ok(Json(MissingBlobsResponse {
        missing: service::missing(&state, &body.hashes).await?,
    }))
}

/// Streams one blob in. The server re-hashes the bytes and refuses a mismatch. Not a
/// transaction and not audited: see `service::blobs` for why an upload needs neither.
pub(super) async fn upload_blob(
    _: Upload,
    State(state): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BlobInfo>), ApiError> {
    let hash = ContentHash::parse(&hash).map_err(|e| ApiError::bad_request("invalid_hash", e.to_string()))?;
    let max = state.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(IngestError::TooLarge { max }.into());
    }
    if let Some(existing) = blobs::get(&state.db, &hash).await? {
        // Another publisher stored it meanwhile. Read the body anyway: answering before the
        // client has sent it would cut its connection mid-upload.
        let mut stream = body.into_data_stream();
        let mut seen = 0u64;
        while let Some(chunk) = stream.next().await {
            seen += chunk
                .map_err(|e| {
                    tracing::info!(error = %e, "upload interrupted");
                    ApiError::bad_request("upload_interrupted", "the upload ended before all its bytes arrived")
                })?
                .len() as u64;
            if seen > max {
                return Err(IngestError::TooLarge { max }.into());
            }
        }
        if !existing.compressed {
            // Recorded by an older version, before its variants were made: make them now, so
            // the publish that follows serves every encoding at once. A failure is the
            // client's to retry, and the background pass's too.
            if let Err(e) = state.blobs.make_variants(&state.db, &hash).await {
                state.want_variants();
                return Err(e.into());
            }
        }
        return Ok((
            StatusCode::OK,
            Json(BlobInfo {
                hash,
                md5: existing.md5.to_string(),
                size: existing.size,
            }),
        ));
    }
    // Compressed while the client waits: the blob is recorded with its variants or not at all.
    let mut stream = body.into_data_stream();
    let record = match state.blobs.ingest(&state.db, hash, &mut stream, max).await {
        Ok(record) => record,
        Err(
            e @ (IngestError::StorageFull { .. } | IngestError::Io(_) | IngestError::Storage(_) | IngestError::Db(_)),
        ) => {
            // Our failure, maybe mid-body (a full disk): take the rest before answering, or the
            // client sees its connection cut instead of the reason.
            drain(&mut stream, max).await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    state.assets.remember(hash, &record);
    Ok((
        StatusCode::CREATED,
        Json(BlobInfo {
            hash,
            md5: record.md5.to_string(),
            size: record.size,
        }),
    ))
}

/// Reads and drops what is left of an upload, up to `max` bytes.
async fn drain(stream: &mut axum::body::BodyDataStream, max: u64) {
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > max {
            break;
        }
    }
}

/// Removes blobs no update references and nobody touched for the grace period, and the partial
/// files interrupted writes left that are older than it.
pub(super) async fn collect_garbage(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<GcRequest>,
) -> Result<Json<GcResult>, ApiError> {
    let collected = service::collect_garbage(&state, &caller.actor(), body.grace_seconds, |hash| {
        state.assets.forget(hash);
    })
    .await?;
    Ok(Json(GcResult {
        removed: collected.removed,
        leftovers_removed: collected.leftovers_removed,
    }))
}
