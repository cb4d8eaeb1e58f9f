//! `GET /apps/{slug}/manifest`: the update check.

use std::collections::HashMap;

use aloft_core::accept::{ManifestFormat, negotiate};
use aloft_core::signature::ExpectSignature;
use aloft_core::{ChannelName, Platform, RuntimeVersion};
use aloft_store::db::updates::BodyKind;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::metrics::{ManifestKind, RequestMetrics};
use crate::served::ServedUpdate;
use crate::state::AppState;

/// A manifest request, validated.
#[derive(Debug)]
struct Check {
    platform: Platform,
    runtime_version: RuntimeVersion,
    channel: Option<ChannelName>,
    current_update_id: Option<Uuid>,
    embedded_update_id: Option<Uuid>,
    client_id: Option<String>,
    expect_signature: Option<ExpectSignature>,
    protocol: u8,
    formats: Vec<ManifestFormat>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::bad_request("invalid_header", format!("header {name} is not visible ASCII"))),
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
            None | Some("0") => 0,
            Some("1") => 1,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "unsupported_protocol_version",
                    format!("expo-protocol-version {other:?} is not supported; this server speaks 0 and 1"),
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
                ApiError::bad_request("missing_runtime_version", "the expo-runtime-version header is required")
            })
            .and_then(|s| {
                RuntimeVersion::parse(s).map_err(|e| ApiError::bad_request("invalid_runtime_version", e.to_string()))
            })?;
        let channel = from("expo-channel-name", "channel")?
            .map(|s| ChannelName::parse(s).map_err(|e| ApiError::bad_request("invalid_channel", e.to_string())))
            .transpose()?;
        let uuid_header = |name: &'static str, code: &'static str| -> Result<Option<Uuid>, ApiError> {
            header_str(headers, name)?
                .map(|s| Uuid::parse_str(s).map_err(|_| ApiError::bad_request(code, format!("{name} must be a UUID"))))
                .transpose()
        };
        let current_update_id = uuid_header("expo-current-update-id", "invalid_current_update_id")?;
        let embedded_update_id = uuid_header("expo-embedded-update-id", "invalid_embedded_update_id")?;
        let client_id = header_str(headers, "eas-client-id")?
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
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
            embedded_update_id,
            client_id,
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
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=0"));
}

/// The no-update answer: 204 with `expo-protocol-version` (without it the client fails).
fn no_update(metrics: &RequestMetrics, protocol: u8) -> Response {
    metrics.manifest_response(ManifestKind::NoUpdate);
    let mut response = StatusCode::NO_CONTENT.into_response();
    // A 204 is only understood as "nothing new" with a version > 0.
    protocol_headers(response.headers_mut(), protocol.max(1));
    response
}

/// A device that expects a signature must get one made with the key id it names.
fn check_signature(slug: &str, check: &Check, update: &ServedUpdate) -> Result<(), ApiError> {
    let Some(expected) = &check.expect_signature else {
        return Ok(());
    };
    match &update.signature {
        None => {
            tracing::warn!(app = %slug, update = %update.id, "device expects a signed manifest but the update is unsigned");
            Err(ApiError::bad_request(
                "signature_unavailable",
                "the device expects a code signature, but this update was published unsigned; \
                 publish with --signing-key or give the app a server-side key",
            ))
        }
        Some((_, keyid)) if keyid != &expected.keyid => {
            tracing::warn!(app = %slug, update = %update.id, expected = %expected.keyid, %keyid, "signature key id mismatch");
            Err(ApiError::bad_request(
                "signature_keyid_mismatch",
                format!(
                    "the device expects key id {:?}, but this update is signed with {keyid:?}",
                    expected.keyid
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

fn multipart(update: &ServedUpdate) -> Response {
    let mut response = update.multipart.clone().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, update.multipart_content_type.clone());
    response
}

pub async fn get_manifest(
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // Headers are read in place: no copy of the header map per check.
    let query = match request.uri().query() {
        None => HashMap::new(),
        Some(_) => {
            Query::<HashMap<String, String>>::try_from_uri(request.uri())
                .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))?
                .0
        }
    };
    let check = Check::parse(request.headers(), &query)?;
    let metrics = &state.request_metrics;
    let Some(&format) = check.formats.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "accept none of multipart/mixed, application/expo+json, application/json",
        ));
    };
    let app = state
        .served
        .app(&slug)
        .ok_or_else(|| ApiError::not_found("app_not_found", format!("no app {slug:?} on this server")))?;
    let channel = check
        .channel
        .as_ref()
        .map(ChannelName::as_str)
        .unwrap_or(&app.default_channel);
    let route = app
        .route(channel)
        .ok_or_else(|| ApiError::not_found("channel_not_found", format!("app {slug:?} has no channel {channel:?}")))?;
    let client_id = check.client_id.as_deref();
    let Some(update) = app
        .head(
            route.branch_for(client_id),
            check.platform,
            check.runtime_version.as_str(),
        )
        .and_then(|head| head.for_device(client_id))
    else {
        return Ok(no_update(metrics, check.protocol));
    };
    // Protocol 0 has no "nothing new" answer; a v0 client compares ids itself.
    if check.protocol >= 1 && check.current_update_id == Some(update.id) {
        return Ok(no_update(metrics, check.protocol));
    }

    if update.kind == BodyKind::Directive {
        // A device already running its embedded update has nothing to roll back.
        if check.current_update_id.is_some() && check.current_update_id == check.embedded_update_id {
            return Ok(no_update(metrics, check.protocol));
        }
        if !check.formats.contains(&ManifestFormat::Multipart) {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "directive_needs_multipart",
                "the channel's answer is a rollBackToEmbedded directive, which only multipart/mixed can carry",
            ));
        }
        check_signature(&slug, &check, update)?;
        metrics.manifest_response(ManifestKind::Directive);
        let mut response = multipart(update);
        // Directives exist from protocol 1 on, whatever the request declared.
        protocol_headers(response.headers_mut(), 1);
        return Ok(response);
    }

    check_signature(&slug, &check, update)?;
    metrics.manifest_response(ManifestKind::Update);
    let mut response = match format {
        ManifestFormat::Multipart => multipart(update),
        ManifestFormat::ExpoJson | ManifestFormat::Json => {
            let mut r = update.body.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            if let Some((sig, _)) = &update.signature {
                r.headers_mut().insert("expo-signature", sig.clone());
            }
            r
        }
    };
    protocol_headers(response.headers_mut(), check.protocol);
    Ok(response)
}
