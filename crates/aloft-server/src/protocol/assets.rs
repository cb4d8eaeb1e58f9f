//! `GET|HEAD /assets/{sha256}.{ext}`: content-addressed, immutable, precompressed.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aloft_core::{ContentHash, content_type};
use aloft_store::db::blobs::{self, BlobRecord};
use aloft_store::{BlobStore, Database, Encoding};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, IntoResponseParts, Response};
use futures::StreamExt;

use super::bytes_cache::BytesCache;
use super::patches::{self, LAUNCH_VARY, LaunchRequest, NO_STORE, PatchIndex};
use crate::error::ApiError;
use crate::sync::Health;

/// How `/assets/…` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssetDelivery {
    /// Stream the bytes through Aloft.
    #[default]
    Proxy,
    /// Redirect to a presigned URL of the object in S3, valid for this long.
    Redirect { ttl: Duration },
}

/// Everything serving an asset uses: where blobs are, how to deliver them, and what is kept in
/// memory between requests. The caches are this module's: only it and the upload path (which
/// records what it stored, [`Assets::remember`]) touch them.
pub(crate) struct Assets {
    db: Database,
    blobs: BlobStore,
    health: Arc<Health>,
    delivery: AssetDelivery,
    /// Blob records whose variants are final, so an asset request needs no database query.
    records: RwLock<HashMap<ContentHash, Servable>>,
    /// Bytes of small and medium blobs.
    bytes: BytesCache,
    /// The stored bundle patches known here, and their served counts.
    pub(crate) patches: PatchIndex,
}

impl Assets {
    pub(crate) fn new(
        db: Database,
        blobs: BlobStore,
        health: Arc<Health>,
        delivery: AssetDelivery,
        cache_bytes: usize,
    ) -> Self {
        Self {
            db,
            blobs,
            health,
            delivery,
            records: RwLock::default(),
            bytes: BytesCache::new(cache_bytes),
            patches: PatchIndex::default(),
        }
    }

    /// Records a blob an upload just stored with its variants, so its first download needs no
    /// query.
    pub(crate) fn remember(&self, hash: ContentHash, record: &BlobRecord) {
        if let Ok(mut records) = self.records.write() {
            records.insert(hash, Servable::from(record));
        }
    }

    /// Forgets what is known about a blob (it was removed), and closes its files.
    pub(crate) fn forget(&self, hash: &ContentHash) {
        if let Ok(mut records) = self.records.write() {
            records.remove(hash);
        }
        self.bytes.remove(hash);
    }
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Splits `<hash>.<ext>` and validates both before anything touches storage.
fn parse_file(file: &str) -> Result<(ContentHash, &'static str), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_asset_name",
            "asset names are <unpadded base64url sha256>.<extension>",
        )
    };
    let (hash, ext) = match file.split_once('.') {
        Some((hash, ext)) => (hash, Some(ext)),
        None => (file, None),
    };
    let hash = ContentHash::parse(hash).map_err(|_| invalid())?;
    let content_type = match ext {
        Some(ext) if content_type::is_valid_extension(ext) => content_type::for_extension(ext),
        Some(_) => return Err(invalid()),
        None => "application/octet-stream",
    };
    Ok((hash, content_type))
}

/// The content hash an asset name (`<hash>.<ext>`) names, if it is valid.
pub(crate) fn hash_of(file: &str) -> Option<ContentHash> {
    parse_file(file).ok().map(|(hash, _)| hash)
}

/// Picks the best stored encoding the client accepts: brotli, then gzip, then identity.
fn choose_encoding(headers: &HeaderMap, blob: &Servable) -> Encoding {
    let Some(accept) = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return Encoding::Identity;
    };
    let accepts = |token: &str| {
        accept.split(',').any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case(token) && !q_zero
        })
    };
    if blob.br_size.is_some() && accepts("br") {
        Encoding::Brotli
    } else if blob.gz_size.is_some() && accepts("gzip") {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

enum RangeRequest {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// A single `bytes=` range; anything else (several ranges, other units) gets the whole body.
fn parse_range(headers: &HeaderMap, size: u64) -> RangeRequest {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((start, end)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        match end.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(n) => size.saturating_sub(n)..size,
            Err(_) => return RangeRequest::Whole,
        }
    } else {
        let Ok(start) = start.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        let end = if end.is_empty() {
            size
        } else {
            match end.parse::<u64>() {
                Ok(e) if e >= start => (e + 1).min(size),
                _ => return RangeRequest::Whole,
            }
        };
        start..end
    };
    if range.start >= size || range.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Part(range)
    }
}

/// What serving an asset needs to know about its blob: its size per stored encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Servable {
    pub size: u64,
    pub br_size: Option<u64>,
    pub gz_size: Option<u64>,
}

impl From<&BlobRecord> for Servable {
    fn from(rec: &BlobRecord) -> Self {
        Self {
            size: rec.size,
            br_size: rec.br_size,
            gz_size: rec.gz_size,
        }
    }
}

async fn blob_record(state: &Assets, hash: &ContentHash) -> Result<Option<Servable>, ApiError> {
    if let Some(servable) = state.records.read().ok().and_then(|c| c.get(hash).copied()) {
        return Ok(Some(servable));
    }
    // While the database is known to be out of reach, go straight to storage.
    if state.health.database_ok() {
        match blobs::get(&state.db, hash).await {
            Ok(rec) => {
                // Cached once its variants are settled; until then the next request asks again.
                if let Some(rec) = rec.as_ref().filter(|r| r.compressed)
                    && let Ok(mut cache) = state.records.write()
                {
                    cache.insert(*hash, Servable::from(rec));
                }
                return Ok(rec.as_ref().map(Servable::from));
            }
            Err(e) if !e.is_unavailable() => return Err(e.into()),
            Err(_) => {}
        }
    }
    // Without the database, the stored bytes themselves say whether the asset exists; its
    // compressed variants are unknown, so it is served as stored.
    Ok(state.blobs.size(hash).await.ok().map(|size| Servable {
        size,
        br_size: None,
        gz_size: None,
    }))
}

/// Answers `GET` or `HEAD` of `/assets/{file}`. Called by the device hook (`device.rs`), which
/// says whether the request is for a launch asset, and which patch would answer it.
pub(crate) async fn answer(
    state: &Assets,
    file: &str,
    method: &Method,
    headers: &HeaderMap,
    launch: Option<LaunchRequest>,
) -> Result<Response, ApiError> {
    let (hash, content_type) = parse_file(file)?;
    let blob = blob_record(state, &hash)
        .await?
        .ok_or_else(|| ApiError::not_found("asset_not_found", format!("no asset with hash {hash}")))?;

    // A patch, when one is stored for the device's base: always from here, never redirected
    // (the bucket would answer a plain 200, which the client would take for the full bundle).
    if let Some(LaunchRequest { patch: Some(ask), .. }) = launch
        && let Some((patch, size)) = state.patches.lookup(&state.db, &state.health, ask).await
    {
        let out = patches::patch_headers(ask.base, size);
        if method == Method::HEAD {
            return Ok((StatusCode::IM_USED, out).into_response());
        }
        match body_of(state, &patch, Encoding::Identity, size, None).await {
            Ok(body) => {
                state.patches.hit(ask);
                return Ok(with_body(out, StatusCode::IM_USED, body));
            }
            // Removed since (its embedded bundle or target was deleted and `gc` ran), or out of
            // reach: the full bundle, which is always right.
            Err(e) => {
                tracing::warn!(%patch, error = %e.message, "a bundle patch cannot be read; serving the full bundle");
                state.patches.forget(ask);
            }
        }
    }
    let vary = if launch.is_some() {
        LAUNCH_VARY
    } else {
        "accept-encoding"
    };
    let cache_control = if launch.is_some_and(|l| l.asks) {
        NO_STORE
    } else {
        IMMUTABLE
    };

    let range = parse_range(headers, blob.size);
    // Ranges apply to the identity representation only.
    let encoding = match range {
        RangeRequest::Whole => choose_encoding(headers, &blob),
        _ => Encoding::Identity,
    };
    let etag = match encoding.token() {
        None => format!("\"{hash}\""),
        Some(token) => format!("\"{hash}-{token}\""),
    };
    let size = match encoding {
        Encoding::Identity => blob.size,
        Encoding::Brotli => blob.br_size.unwrap_or(blob.size),
        Encoding::Gzip => blob.gz_size.unwrap_or(blob.size),
    };

    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    out.insert(header::VARY, HeaderValue::from_static(vary));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Some(token) = encoding.token() {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
    }

    if let AssetDelivery::Redirect { ttl } = state.delivery {
        // The bucket serves the bytes (and ranges) itself; the link expires, so it is not cached.
        if let Some(url) = state
            .blobs
            .presigned_url(&hash, encoding, ttl)
            .await
            .map_err(|e| ApiError::internal("presigning failed", &e))?
        {
            let mut out = HeaderMap::new();
            out.insert(
                header::LOCATION,
                HeaderValue::from_str(&url).map_err(|e| ApiError::internal("presigned URL", &e))?,
            );
            out.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
            out.insert(header::VARY, HeaderValue::from_static(vary));
            return Ok((StatusCode::FOUND, out).into_response());
        }
    }

    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    // Weak comparison (RFC 9110 §13.1.2): a proxy may have weakened the tag.
    let matches = |tag: &str| {
        let tag = tag.trim();
        tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
    };
    if if_none_match.is_some_and(|v| v.split(',').any(matches)) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }

    let (status, byte_range) = match range {
        RangeRequest::Unsatisfiable => {
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).map_err(|e| ApiError::internal("header", &e))?,
            );
            out.remove(header::CONTENT_TYPE);
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
        }
        RangeRequest::Part(r) => {
            let value = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).map_err(|e| ApiError::internal("header", &e))?,
            );
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
        RangeRequest::Whole => (StatusCode::OK, None),
    };
    let length = byte_range.as_ref().map_or(size, |r| r.end - r.start);
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));

    if method == Method::HEAD {
        return Ok((status, out).into_response());
    }
    let body = body_of(state, &hash, encoding, size, byte_range).await?;
    Ok(with_body(out, status, body))
}

/// A whole response body that is also a file on local disk, as a response extension: the wire
/// lane sends the file with `sendfile` (no copy through user space); other lanes send the body.
#[derive(Debug, Clone)]
pub(crate) struct FileBody(pub Arc<std::fs::File>);

/// Whole representations of at least this size are sent from their file where blobs are on
/// local disk: below it, copying the bytes costs less than splicing pages (BENCHMARKS.md,
/// "sendfile").
const SENDFILE_MIN: u64 = 32 * 1024;

/// The stored bytes of one representation (or a range of them): small and medium blobs from
/// memory, no file or bucket access; larger ones streamed. A whole representation kept open
/// on local disk also comes with its file.
async fn body_of(
    state: &Assets,
    hash: &ContentHash,
    encoding: Encoding,
    size: u64,
    byte_range: Option<Range<u64>>,
) -> Result<(Body, Option<FileBody>), ApiError> {
    let missing = |e: aloft_store::blobs::StorageError| {
        if aloft_store::blobs::is_missing(&e) {
            // A record without its bytes: a store restored out of order. Say so in the log.
            tracing::error!(%hash, "blob recorded in the database but missing from storage");
            return ApiError::not_found("asset_not_found", format!("no asset with hash {hash}"));
        }
        ApiError::internal("reading a stored blob failed", &e)
    };
    if state.bytes.admits(size) {
        let key = (*hash, encoding);
        let cached = match state.bytes.get(&key) {
            Some(cached) => cached,
            None => {
                let bytes = state
                    .blobs
                    .get(hash, encoding, None)
                    .await
                    .map_err(missing)?
                    .bytes()
                    .await
                    .map_err(missing)?;
                // Opened after reading: a file replaced in between holds the same bytes.
                let file = (bytes.len() as u64 >= SENDFILE_MIN)
                    .then(|| state.blobs.open_local(hash, encoding))
                    .flatten()
                    .filter(|f| f.metadata().is_ok_and(|m| m.len() == bytes.len() as u64));
                state.bytes.insert(key, bytes, file)
            }
        };
        return Ok(match byte_range {
            Some(r) => (
                Body::from(
                    cached
                        .bytes
                        .slice(r.start as usize..(r.end as usize).min(cached.bytes.len())),
                ),
                None,
            ),
            None => (Body::from(cached.bytes), cached.file.map(FileBody)),
        });
    }
    let result = state.blobs.get(hash, encoding, byte_range).await.map_err(missing)?;
    let stream = result.into_stream().map(|chunk| chunk.map_err(std::io::Error::other));
    Ok((Body::from_stream(stream), None))
}

/// A response with `body`, and its file for the wire lane when it has one.
fn with_body(parts: impl IntoResponseParts, status: StatusCode, (body, file): (Body, Option<FileBody>)) -> Response {
    let mut response = (status, parts, body).into_response();
    if let Some(file) = file {
        response.extensions_mut().insert(file);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn names_are_validated_before_storage() {
        let h = ContentHash::of(b"x").to_string();
        assert_eq!(parse_file(&format!("{h}.png")).unwrap().1, "image/png");
        assert_eq!(parse_file(&format!("{h}.bundle")).unwrap().1, "application/javascript");
        for bad in [
            "../../etc/passwd",
            "..%2F..%2Fetc",
            &format!("{h}.p/ng"),
            &format!("{h}..png"),
            "x.png",
            "",
        ] {
            assert!(parse_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodings() {
        let blob = Servable {
            size: 100,
            br_size: Some(10),
            gz_size: Some(20),
        };
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "gzip, br")]), &blob),
            Encoding::Brotli
        );
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "gzip")]), &blob),
            Encoding::Gzip
        );
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "br;q=0, gzip")]), &blob),
            Encoding::Gzip
        );
        assert_eq!(choose_encoding(&headers(&[]), &blob), Encoding::Identity);
        let plain = Servable {
            br_size: None,
            gz_size: None,
            ..blob
        };
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "br")]), &plain),
            Encoding::Identity
        );
    }

    #[test]
    fn ranges() {
        let r = |v: &'static str| parse_range(&headers(&[("range", v)]), 100);
        assert!(matches!(r("bytes=0-9"), RangeRequest::Part(x) if x == (0..10)));
        assert!(matches!(r("bytes=90-"), RangeRequest::Part(x) if x == (90..100)));
        assert!(matches!(r("bytes=-5"), RangeRequest::Part(x) if x == (95..100)));
        assert!(matches!(r("bytes=50-500"), RangeRequest::Part(x) if x == (50..100)));
        assert!(matches!(r("bytes=100-"), RangeRequest::Unsatisfiable));
        assert!(matches!(r("bytes=0-1,5-6"), RangeRequest::Whole));
        assert!(matches!(r("items=0-1"), RangeRequest::Whole));
    }
}
