//! `GET /apps/{slug}/manifest`: the update check.

use std::collections::HashMap;

use aloft_core::accept::{ManifestFormat, negotiate};
use aloft_core::signature::ExpectSignature;
use aloft_core::{ChannelName, Platform, RuntimeVersion};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use crate::extract::ApiPath;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::error::ApiError;
use crate::metrics;
use crate::state::AppState;

/// A manifest request, validated.
#[derive(Debug)]
struct Check {
    platform: Platform,
    runtime_version: RuntimeVersion,
    channel: Option<ChannelName>,
    current_update_id: Option<Uuid>,
    expect_signature: Option<ExpectSignature>,
    protocol: u8,
    formats: Vec<ManifestFormat>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::bad_request(
                "invalid_header",
                format!("header {name} is not visible ASCII"),
            )
        }),
    }
}

impl Check {
    fn parse(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let from = |header: &str, param: &str| -> Result<Option<String>, ApiError> {
            Ok(header_str(headers, header)?
                .map(str::to_owned)
                .or_else(|| query.get(param).cloned()))
        };
        let protocol = match header_str(headers, "expo-protocol-version")? {
            None => 0,
            Some("0") => 0,
            Some("1") => 1,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "unsupported_protocol_version",
                    format!(
                        "expo-protocol-version {other:?} is not supported; this server speaks 0 and 1"
                    ),
                ));
            }
        };
        let platform = from("expo-platform", "platform")?
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_platform",
                    "the expo-platform header is required (ios or android)",
                )
            })?
            .parse::<Platform>()
            .map_err(|e| ApiError::bad_request("invalid_platform", e.to_string()))?;
        let runtime_version = from("expo-runtime-version", "runtime-version")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_runtime_version",
                    "the expo-runtime-version header is required",
                )
            })
            .and_then(|s| {
                RuntimeVersion::parse(s)
                    .map_err(|e| ApiError::bad_request("invalid_runtime_version", e.to_string()))
            })?;
        let channel = from("expo-channel-name", "channel")?
            .map(|s| {
                ChannelName::parse(s)
                    .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))
            })
            .transpose()?;
        let current_update_id = header_str(headers, "expo-current-update-id")?
            .map(|s| {
                Uuid::parse_str(s).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_current_update_id",
                        "expo-current-update-id must be a UUID",
                    )
                })
            })
            .transpose()?;
        let expect_signature = headers
            .get("expo-expect-signature")
            .map(|v| {
                ExpectSignature::parse(v.as_bytes())
                    .map_err(|e| ApiError::bad_request("invalid_expect_signature", e.to_string()))
            })
            .transpose()?;
        let formats = negotiate(header_str(headers, header::ACCEPT.as_str())?);
        Ok(Self {
            platform,
            runtime_version,
            channel,
            current_update_id,
            expect_signature,
            protocol,
            formats,
        })
    }
}

fn protocol_headers(headers: &mut HeaderMap, protocol: u8) {
    let version = if protocol == 0 { "0" } else { "1" };
    headers.insert("expo-protocol-version", HeaderValue::from_static(version));
    headers.insert("expo-sfv-version", HeaderValue::from_static("0"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
}

/// The no-update answer: 204 with `expo-protocol-version` (without it the client fails).
fn no_update(protocol: u8) -> Response {
    metrics::manifest_response("no-update");
    let mut response = StatusCode::NO_CONTENT.into_response();
    // A 204 is only understood as "nothing new" with a version > 0.
    protocol_headers(response.headers_mut(), protocol.max(1));
    response
}

pub async fn get_manifest(
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?
        .0;
    let check = Check::parse(&headers, &query)?;
    let Some(&format) = check.formats.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "accept none of multipart/mixed, application/expo+json, application/json",
        ));
    };
    let app = state.served.app(&slug).ok_or_else(|| {
        ApiError::not_found("app_not_found", format!("no app {slug:?} on this server"))
    })?;
    let channel = check
        .channel
        .as_ref()
        .map(ChannelName::as_str)
        .unwrap_or(&app.default_channel);
    let branch = app.branch_of(channel).ok_or_else(|| {
        ApiError::not_found(
            "channel_not_found",
            format!("app {slug:?} has no channel {channel:?}"),
        )
    })?;
    let Some(update) = app.head(branch, check.platform, check.runtime_version.as_str()) else {
        return Ok(no_update(check.protocol));
    };
    // Protocol 0 has no "nothing new" answer; a v0 client compares ids itself.
    if check.protocol >= 1 && check.current_update_id == Some(update.id) {
        return Ok(no_update(check.protocol));
    }
    if let Some(expected) = &check.expect_signature {
        match &update.signature {
            None => {
                tracing::warn!(app = %slug, update = %update.id, "device expects a signed manifest but the update is unsigned");
                return Err(ApiError::bad_request(
                    "signature_unavailable",
                    "the device expects a code signature, but this update was published unsigned; \
                     publish with --signing-key or give the app a server-side key",
                ));
            }
            Some((_, keyid)) if keyid != &expected.keyid => {
                tracing::warn!(app = %slug, update = %update.id, expected = %expected.keyid, %keyid, "signature key id mismatch");
                return Err(ApiError::bad_request(
                    "signature_keyid_mismatch",
                    format!(
                        "the device expects key id {:?}, but this update is signed with {keyid:?}",
                        expected.keyid
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    metrics::manifest_response("update");
    let mut response = match format {
        ManifestFormat::Multipart => {
            let mut r = update.multipart.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, update.multipart_content_type.clone());
            r
        }
        ManifestFormat::ExpoJson | ManifestFormat::Json => {
            let mut r = update.manifest.clone().into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            if let Some((sig, _)) = &update.signature {
                r.headers_mut().insert("expo-signature", sig.clone());
            }
            r
        }
    };
    protocol_headers(response.headers_mut(), check.protocol);
    Ok(response)
}
