//! `GET /apps/{slug}/manifest`: the update check, answered from the served state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use aloft_core::accept::{ManifestFormat, negotiate};
use aloft_core::signature::ExpectSignature;
use aloft_core::{ChannelName, Platform, RuntimeVersion, reports};
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
    /// `Expo-Recent-Failed-Update-IDs`: updates whose launch failed on the device.
    failed: Vec<Uuid>,
    /// `Expo-Fatal-Error`, read leniently (the text may hold any character).
    fatal_error: Option<Cow<'a, str>>,
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
    failed_update_ids: Option<&'a [u8]>,
    fatal_error: Option<&'a [u8]>,
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
            16 if is("expo-fatal-error") => &mut self.fatal_error,
            17 if is("expo-channel-name") => &mut self.channel,
            20 if is("expo-runtime-version") => &mut self.runtime_version,
            21 if is("expo-protocol-version") => &mut self.protocol_version,
            21 if is("expo-expect-signature") => &mut self.expect_signature,
            22 if is("expo-current-update-id") => &mut self.current_update_id,
            23 if is("expo-embedded-update-id") => &mut self.embedded_update_id,
            29 if is("expo-recent-failed-update-ids") => &mut self.failed_update_ids,
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
        // Reports are information: a malformed one is ignored, never a reason to refuse.
        let failed = found
            .failed_update_ids
            .map(reports::failed_update_ids)
            .unwrap_or_default();
        let fatal_error = found.fatal_error.and_then(|v| match String::from_utf8_lossy(v) {
            Cow::Borrowed(text) => reports::fatal_error(text).map(Cow::Borrowed),
            Cow::Owned(text) => reports::fatal_error(&text).map(|t| Cow::Owned(t.to_owned())),
        });
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
            failed,
            fatal_error,
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

/// The query parameters of a check (`?platform=…&runtime-version=…&channel=…`), which stand in
/// for headers a browser cannot set.
pub(crate) type Params = HashMap<String, String>;

/// Reads a check's query string; none is the usual case, and costs nothing.
pub(crate) fn params(query: Option<&str>) -> Result<Params, ApiError> {
    match query {
        None => Ok(HashMap::new()),
        Some(q) => parse_query::<Params>(q),
    }
}

/// What a check told and what it got, for the insights (`insights.rs`): filled in as the
/// check is answered, from the request and the served state, and recorded by the device hook.
#[derive(Debug, Default)]
pub(crate) struct Facts<'a> {
    /// The app, when it exists, and its slug.
    pub(crate) app_id: Option<i64>,
    pub(crate) slug: &'a str,
    /// The channel the check was answered for: the one named, or the app's default.
    pub(crate) channel: Option<ChannelOf<'a>>,
    /// Whether that channel exists (else the check was answered "no update").
    pub(crate) channel_known: bool,
    pub(crate) platform: Option<Platform>,
    pub(crate) runtime_version: &'a str,
    pub(crate) client_id: Option<&'a str>,
    /// What the device runs.
    pub(crate) running: Running,
    /// Updates of this app the device reported failed, known to this server.
    pub(crate) failed: Vec<Uuid>,
    pub(crate) fatal_error: Option<Cow<'a, str>>,
    /// The update whose manifest was sent.
    pub(crate) served: Option<Uuid>,
}

/// The channel a check is for: the one the request names (borrowed from it), or the app's
/// default (shared with the served state). Neither copies a string on the check path.
#[derive(Debug, Clone)]
pub(crate) enum ChannelOf<'a> {
    Named(&'a str),
    Default(Arc<str>),
}

impl<'a> ChannelOf<'a> {
    fn new(named: Option<&'a str>, default: &Arc<str>) -> Self {
        match named {
            Some(name) => ChannelOf::Named(name),
            None => ChannelOf::Default(default.clone()),
        }
    }
}

impl AsRef<str> for ChannelOf<'_> {
    fn as_ref(&self) -> &str {
        match self {
            ChannelOf::Named(name) => name,
            ChannelOf::Default(name) => name,
        }
    }
}

/// What a device runs, as its check says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Running {
    /// Its embedded update (or nothing reported).
    #[default]
    Embedded,
    /// An update of this app in memory.
    Update(Uuid),
    /// An update this server does not hold in memory.
    Other,
}

/// Answers an update check from memory. It is given only the served state and its metrics, so
/// a check can do no I/O: no database, no storage, no await. Called by the device hook
/// (`device.rs`) for every lane, with the request's query string and the headers a check reads.
pub(crate) fn answer<'a>(
    served: &Served,
    metrics: &RequestMetrics,
    slug: &'a str,
    query: &'a Params,
    found: CheckHeaders<'a>,
    facts: &mut Facts<'a>,
) -> Result<Response, ApiError> {
    // Headers are read in place: no copy of the header map per check.
    let check = Check::parse(found, query)?;
    let Some(&format) = check.formats.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "accept none of multipart/mixed, application/expo+json, application/json",
        ));
    };
    let snapshot = served.snapshot();
    let client_id = check.client_id;
    let head = match snapshot.resolve(slug, check.channel, check.platform, check.runtime_version) {
        Some(resolved) => {
            facts.app_id = Some(resolved.app_id);
            facts.slug = slug;
            facts.channel = Some(ChannelOf::new(check.channel, &resolved.default_channel));
            facts.channel_known = true;
            resolved.head_for(client_id)
        }
        None => {
            // Not in the index: an unknown app or channel, or nothing for this platform and
            // runtime version on the channel's branches (the per-app maps decide, as the index
            // would have).
            let app = snapshot
                .app(slug)
                .ok_or_else(|| ApiError::not_found("app_not_found", format!("no app {slug:?} on this server")))?;
            facts.app_id = Some(app.id);
            facts.slug = slug;
            facts.channel = Some(ChannelOf::new(check.channel, &app.default_channel));
            let channel = check.channel.unwrap_or(&app.default_channel);
            match app.route(channel) {
                Some(route) => {
                    facts.channel_known = true;
                    app.head_for(route, check.platform, check.runtime_version, client_id)
                }
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
    let app_id = facts.app_id;
    let known = |id: &Uuid| snapshot.update(id).filter(|(app, _)| Some(*app) == app_id);
    facts.platform = Some(check.platform);
    facts.runtime_version = check.runtime_version;
    facts.client_id = client_id;
    facts.running = match check.current_update_id {
        None => Running::Embedded,
        Some(current) if Some(current) == check.embedded_update_id => Running::Embedded,
        Some(current) if known(&current).is_some() => Running::Update(current),
        Some(_) => Running::Other,
    };
    facts.failed = check.failed.iter().copied().filter(|id| known(id).is_some()).collect();
    facts.fatal_error = check.fatal_error.clone();

    let update = match head {
        None => None,
        Some(head) if check.failed.is_empty() => head.for_device(client_id),
        // A device is never offered an update it reported failed.
        Some(head) => {
            let running_since = check
                .current_update_id
                .and_then(|id| known(&id))
                .map(|(_, u)| u.created_at);
            head.avoiding_failed(head.for_device(client_id), &check.failed, running_since)
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
    facts.served = Some(update.id);
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
