//! `GET /apps/{slug}/manifest`: the update check, answered from the served state.

use std::collections::HashMap;

use aloft_core::accept::{ManifestFormat, negotiate};
use aloft_core::signature::ExpectSignature;
use aloft_core::{ChannelName, Platform, RuntimeVersion};
use aloft_store::db::updates::BodyKind;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::parse_query;
use crate::metrics::{ManifestKind, RequestMetrics};
use crate::served::{Served, ServedUpdate};

/// A manifest request, validated; borrows from the request.
#[derive(Debug)]
struct Check<'a> {
    platform: Platform,
    runtime_version: &'a str,
    channel: Option<&'a str>,
    current_update_id: Option<Uuid>,
    embedded_update_id: Option<Uuid>,
    client_id: Option<&'a str>,
    expect_signature: Option<ExpectSignature>,
    protocol: u8,
    formats: Vec<ManifestFormat>,
}

/// The request headers a check reads, found in one pass over the request's headers (the first
/// value of each, as `HeaderMap::get` would give) instead of one hashed lookup per name.
#[derive(Default)]
pub(crate) struct CheckHeaders<'a> {
    protocol_version: Option<&'a [u8]>,
    platform: Option<&'a [u8]>,
    runtime_version: Option<&'a [u8]>,
    channel: Option<&'a [u8]>,
    current_update_id: Option<&'a [u8]>,
    embedded_update_id: Option<&'a [u8]>,
    client_id: Option<&'a [u8]>,
    expect_signature: Option<&'a [u8]>,
    accept: Option<&'a [u8]>,
}

impl<'a> CheckHeaders<'a> {
    pub(crate) fn scan(headers: &'a HeaderMap) -> Self {
        Self::from_pairs(headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())))
    }

    /// From raw (name, value) pairs in request order; names in any case.
    pub(crate) fn from_pairs(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut found = Self::default();
        for (name, value) in pairs {
            if let Some(slot) = found.slot(name) {
                slot.get_or_insert(value);
            }
        }
        found
    }

    fn slot(&mut self, name: &[u8]) -> Option<&mut Option<&'a [u8]>> {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        Some(match name.len() {
            6 if is("accept") => &mut self.accept,
            13 if is("expo-platform") => &mut self.platform,
            13 if is("eas-client-id") => &mut self.client_id,
            17 if is("expo-channel-name") => &mut self.channel,
            20 if is("expo-runtime-version") => &mut self.runtime_version,
            21 if is("expo-protocol-version") => &mut self.protocol_version,
            21 if is("expo-expect-signature") => &mut self.expect_signature,
            22 if is("expo-current-update-id") => &mut self.current_update_id,
            23 if is("expo-embedded-update-id") => &mut self.embedded_update_id,
            _ => return None,
        })
    }
}

/// A header value as text: visible ASCII (and tabs) only, as `HeaderValue::to_str` accepts,
/// trimmed.
fn header_str<'a>(value: Option<&'a [u8]>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            .then(|| std::str::from_utf8(v).ok())
            .flatten()
            .map(|s| Some(s.trim()))
            .ok_or_else(|| ApiError::bad_request("invalid_header", format!("header {name} is not visible ASCII"))),
    }
}

impl<'a> Check<'a> {
    fn parse(found: CheckHeaders<'a>, query: &'a HashMap<String, String>) -> Result<Self, ApiError> {
        let from = |value: Option<&'a [u8]>, header: &str, param: &str| -> Result<Option<&'a str>, ApiError> {
            Ok(header_str(value, header)?.or_else(|| query.get(param).map(String::as_str)))
        };
        let protocol = match header_str(found.protocol_version, "expo-protocol-version")? {
            None | Some("0") => 0,
            Some("1") => 1,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "unsupported_protocol_version",
                    format!("expo-protocol-version {other:?} is not supported; this server speaks 0 and 1"),
                ));
            }
        };
        let platform = from(found.platform, "expo-platform", "platform")?
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_platform",
                    "the expo-platform header is required (ios or android)",
                )
            })?
            .parse::<Platform>()
            .map_err(|e| ApiError::bad_request("invalid_platform", e.to_string()))?;
        let runtime_version = from(found.runtime_version, "expo-runtime-version", "runtime-version")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("missing_runtime_version", "the expo-runtime-version header is required")
            })
            .and_then(|s| {
                RuntimeVersion::validate(s).map_err(|e| ApiError::bad_request("invalid_runtime_version", e.to_string()))
            })?;
        let channel = from(found.channel, "expo-channel-name", "channel")?
            .map(|s| ChannelName::validate(s).map_err(|e| ApiError::bad_request("invalid_channel", e.to_string())))
            .transpose()?;
        let uuid_header = |value: Option<&[u8]>,
                           name: &'static str,
                           code: &'static str|
         -> Result<Option<Uuid>, ApiError> {
            header_str(value, name)?
                .map(|s| Uuid::parse_str(s).map_err(|_| ApiError::bad_request(code, format!("{name} must be a UUID"))))
                .transpose()
        };
        let current_update_id = uuid_header(
            found.current_update_id,
            "expo-current-update-id",
            "invalid_current_update_id",
        )?;
        let embedded_update_id = uuid_header(
            found.embedded_update_id,
            "expo-embedded-update-id",
            "invalid_embedded_update_id",
        )?;
        let client_id = header_str(found.client_id, "eas-client-id")?.filter(|s| !s.is_empty());
        let expect_signature = found
            .expect_signature
            .map(|v| {
                ExpectSignature::parse(v).map_err(|e| ApiError::bad_request("invalid_expect_signature", e.to_string()))
            })
            .transpose()?;
        let formats = negotiate(header_str(found.accept, header::ACCEPT.as_str())?);
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

/// Answers an update check from memory. It is given only the served state and its metrics, so
/// a check can do no I/O: no database, no storage, no await. Called by the device hook
/// (`device.rs`) for every lane, with the request's query string and the headers a check reads.
pub(crate) fn answer(
    served: &Served,
    metrics: &RequestMetrics,
    slug: &str,
    query: Option<&str>,
    found: CheckHeaders<'_>,
) -> Result<Response, ApiError> {
    // Headers are read in place: no copy of the header map per check.
    let query = match query {
        None => HashMap::new(),
        Some(q) => parse_query::<HashMap<String, String>>(q)?,
    };
    let check = Check::parse(found, &query)?;
    let Some(&format) = check.formats.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "accept none of multipart/mixed, application/expo+json, application/json",
        ));
    };
    let snapshot = served.snapshot();
    let client_id = check.client_id;
    let update = match snapshot.resolve(slug, check.channel, check.platform, check.runtime_version) {
        Some(resolved) => resolved.for_device(client_id),
        None => {
            // Not in the index: an unknown app or channel, or nothing for this platform and
            // runtime version on the channel's branches (the per-app maps decide, as the index
            // would have).
            let app = snapshot
                .app(slug)
                .ok_or_else(|| ApiError::not_found("app_not_found", format!("no app {slug:?} on this server")))?;
            let channel = check.channel.unwrap_or(&app.default_channel);
            match app.route(channel) {
                Some(route) => app.update_for(route, check.platform, check.runtime_version, client_id),
                None => {
                    // A build shipped before its channel's first publish: nothing new for it
                    // yet. A 404 would make the client report a failed check on every launch,
                    // so it is answered like an unknown runtime version, and counted so a
                    // misconfigured build shows up for operators instead.
                    tracing::debug!(app = %slug, channel, "update check for a channel that does not exist");
                    metrics.unknown_channel(slug);
                    None
                }
            }
        }
    };
    let Some(update) = update else {
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
        check_signature(slug, &check, update)?;
        metrics.manifest_response(ManifestKind::Directive);
        let mut response = multipart(update);
        // Directives exist from protocol 1 on, whatever the request declared.
        protocol_headers(response.headers_mut(), 1);
        return Ok(response);
    }

    check_signature(slug, &check, update)?;
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
