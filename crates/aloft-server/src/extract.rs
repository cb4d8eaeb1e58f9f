//! Extractors whose rejections are API errors with stable codes and messages in plain words
//! (see `explain`): a refusal names the field, path segment or query parameter and what it
//! accepts, never a Rust type or a library's error text.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::explain;

/// The body limit of JSON routes: axum's default, which the router keeps.
const BODY_LIMIT: &str = "2 MiB";

/// A JSON body. Not declared as JSON: `415 unsupported_media_type`; malformed JSON:
/// `400 invalid_json`; well-formed JSON of the wrong shape: `422 invalid_json`; too large:
/// `413 body_too_large`.
pub(crate) struct ApiJson<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned + JsonSchema> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON, with the header `content-type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is larger than the {BODY_LIMIT} this route accepts"),
                )
            } else {
                ApiError::bad_request("invalid_json", "the body could not be read to its end")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserialises a JSON body into `T`, or explains why not.
pub(crate) fn parse_json<T: DeserializeOwned + JsonSchema>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let refuse = |message: String, syntax: bool| {
        let status = if syntax {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, "invalid_json", message)
    };
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        refuse(explain::body_error::<T>(&e), syntax)
    })?;
    de.end().map_err(|e| refuse(explain::json_error::<T>(&e), true))?;
    Ok(value)
}

/// Path parameters; ones that do not parse (a non-number id, invalid UTF-8) are
/// `400 invalid_path`, naming the segment.
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request("invalid_path", path_message(&rejection))),
        }
    }
}

/// axum's path errors, in words. The expected type axum reports is a Rust type name; only the
/// ones the routes use are translated, anything else says only which segment is wrong.
fn path_message(rejection: &PathRejection) -> String {
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        return "the path does not match this route".to_owned();
    };
    let kind = |expected: &str| match expected {
        "i64" | "i32" | "u64" | "u32" | "usize" => "a whole number",
        "uuid::Uuid" | "Uuid" => "a UUID",
        _ => "a different value",
    };
    match e.kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => format!(
            "path segment `{key}` must be {}, not {}",
            kind(expected_type),
            serde_json::Value::String(value.chars().take(100).collect())
        ),
        ErrorKind::ParseErrorAtIndex {
            index, expected_type, ..
        } => {
            format!("path segment {} must be {}", index + 1, kind(expected_type))
        }
        ErrorKind::ParseError { value, expected_type } => format!(
            "the path segment {} must be {}",
            serde_json::Value::String(value.chars().take(100).collect()),
            kind(expected_type)
        ),
        ErrorKind::InvalidUtf8InPathParam { key } => {
            format!("path segment `{key}` is not valid UTF-8 once percent-decoded")
        }
        ErrorKind::DeserializeError { key, .. } => format!("path segment `{key}` is not valid here"),
        _ => "the path does not match this route".to_owned(),
    }
}

/// A query string (`?a=1&b=2`); an unknown or malformed parameter is `400 invalid_query`,
/// naming it and what it accepts. No query string is the same as an empty one.
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + JsonSchema> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Deserialises a query string into `T`, or explains why not.
pub(crate) fn parse_query<T: DeserializeOwned + JsonSchema>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize::<_, T>(de)
        .map_err(|e| ApiError::bad_request("invalid_query", explain::query_error::<T>(&e)))
}
