//! How assets reach devices: proxied (default), linked through a CDN base URL, or redirected to
//! presigned S3 URLs; and large uploads, which stream (multipart on S3) without being held whole.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use aloft_store::testing::{Backend, Location};
use serde_json::Value;
use support::*;

const RV: &str = "1.0.0";

/// A server on `location` with extra flags, an admin token and app `demo`.
fn start(dir: &std::path::Path, location: &Location, extra: &[&str]) -> (Server, String) {
    let mut token_args = vec!["tokens".to_owned(), "create".to_owned()];
    token_args.extend(location.token_args());
    let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
    let token = aloft_ok(&token_args).trim().to_owned();
    let mut args = location.serve_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_on(&dir.join("data"), "127.0.0.1:0", args);
    aloft_ok(&["apps", "create", "demo", "--server", &server.base, "--token", &token]);
    (server, token)
}

fn publish(dir: &std::path::Path, server: &Server, token: &str, tag: &str) -> Value {
    publish_json(&server.base, token, &make_export(dir, tag, RV))
}

async fn manifest(server: &Server) -> Value {
    let reply = get(
        &server.manifest_url("demo"),
        &without(device_headers("ios", RV, "production"), "expo-expect-signature"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    serde_json::from_slice(&parts[0].body).unwrap()
}

#[tokio::test]
async fn a_cdn_base_url_is_what_manifests_link_assets_with() {
    let dir = tempfile::tempdir().unwrap();
    let location = Backend::from_env().fresh(&dir.path().join("data"));
    let (server, token) = start(
        dir.path(),
        &location,
        &["--asset-base-url", "https://cdn.example.test/"],
    );
    publish(dir.path(), &server, &token, "cdn");
    let m = manifest(&server).await;
    for asset in std::iter::once(&m["launchAsset"]).chain(m["assets"].as_array().unwrap()) {
        let url = asset["url"].as_str().unwrap();
        let path = url
            .strip_prefix("https://cdn.example.test/assets/")
            .unwrap_or_else(|| panic!("{url}"));
        // What the CDN fetches from its origin (Aloft) at the same path: cacheable forever.
        let reply = get(&format!("{}/assets/{path}", server.base), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        // A launch asset's answer may be a patch for requests that ask for one (docs/patches.md).
        let vary = if asset == &m["launchAsset"] {
            "accept-encoding, a-im, expo-current-update-id, expo-embedded-update-id, expo-requested-update-id"
        } else {
            "accept-encoding"
        };
        assert_eq!(reply.header("vary"), Some(vary));
        assert_eq!(sha256_b64url(&reply.body), asset["hash"].as_str().unwrap());
    }
}

#[tokio::test]
async fn redirect_delivery_sends_devices_to_presigned_bucket_urls() {
    let Some(backend) = Backend::require_postgres_s3("redirect_delivery_sends_devices_to_presigned_bucket_urls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let location = backend.fresh(&dir.path().join("data"));
    let (server, token) = start(
        dir.path(),
        &location,
        &["--asset-delivery", "redirect", "--presign-ttl-seconds", "600"],
    );
    publish(dir.path(), &server, &token, "redirect");
    let m = manifest(&server).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for asset in std::iter::once(&m["launchAsset"]).chain(m["assets"].as_array().unwrap()) {
        let reply = no_redirects.get(asset["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(reply.status(), 302);
        assert_eq!(reply.headers()["cache-control"], "private, no-store");
        let location = reply.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("X-Amz-Signature="), "{location}");
        // The device follows it without credentials and gets the verified bytes.
        let bytes = reqwest::get(&location).await.unwrap();
        assert_eq!(bytes.status(), 200, "{location}");
        let bytes = bytes.bytes().await.unwrap();
        assert_eq!(sha256_b64url(&bytes), asset["hash"].as_str().unwrap());
        // A tampered signature is refused by the bucket.
        let at = location.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let flipped = if &location[at..at + 1] == "0" { "1" } else { "0" };
        let tampered = format!("{}{flipped}{}", &location[..at], &location[at + 1..]);
        let refused = reqwest::get(&tampered).await.unwrap().status();
        assert!(refused.is_client_error(), "a tampered presigned URL got {refused}");
    }
}

#[tokio::test]
async fn large_uploads_stream_and_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let location = Backend::from_env().fresh(&dir.path().join("data"));
    let (server, token) = start(dir.path(), &location, &[]);
    // Larger than the 10 MiB write buffer, so S3 gets a multipart upload.
    let big = bytes_of("large upload", 23 << 20);
    let hash = sha256_b64url(&big);
    let client = reqwest::Client::new();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let reply = client
        .put(format!("{}/api/v1/blobs/{hash}", server.base))
        .bearer_auth(&token)
        .header("content-length", big.len())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201, "{}", reply.text().await.unwrap());
    let reply = get(&format!("{}/assets/{hash}.bin", server.base), &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), big.len());
    assert_eq!(sha256_b64url(&reply.body), hash);
    let range = get(
        &format!("{}/assets/{hash}.bin", server.base),
        &[("range".into(), "bytes=12582912-12582927".into())],
    )
    .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, big[12_582_912..12_582_928]);
}

/// A request for `url` with `method` and headers, as raw status, headers and body.
async fn request(method: reqwest::Method, url: &str, headers: &[(String, String)]) -> Reply {
    let mut request = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    Reply { status, headers, body }
}

/// Headers whose value may differ between two identical answers.
fn comparable(reply: &Reply) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

/// Recent clients add `expo-runtime-version` and `expo-channel-name` to asset requests, and
/// `eas update`-style clients pre-warm patches with a `HEAD` of the launch asset carrying
/// `A-IM: bsdiff` and the update ids (docs/protocol.md §9). None of it changes what is served,
/// except that an answer to a request asking for a patch is not to be stored by a cache (these
/// bundles compress so well that no patch is worth serving; patches: `tests/patches.rs`).
#[tokio::test]
async fn new_client_headers_on_asset_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let location = Backend::from_env().fresh(&dir.path().join("data"));
    let (server, token) = start(dir.path(), &location, &[]);
    let first = publish(dir.path(), &server, &token, "h1");
    let second = publish(dir.path(), &server, &token, "h2");
    let m = manifest(&server).await;
    let launch = m["launchAsset"]["url"].as_str().unwrap().to_owned();
    let other = m["assets"][0]["url"].as_str().unwrap().to_owned();
    let extra = [
        ("expo-runtime-version", RV.to_owned()),
        ("expo-channel-name", "production".to_owned()),
        ("Expo-Platform", "ios".to_owned()),
        ("A-IM", "bsdiff".to_owned()),
        ("Expo-Current-Update-ID", ios_id(&first)),
        ("Expo-Requested-Update-ID", ios_id(&second)),
        (
            "Expo-Embedded-Update-ID",
            "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b".to_owned(),
        ),
        ("EAS-Client-ID", "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D".to_owned()),
    ];
    for url in [&launch, &other] {
        for encoding in ["br, gzip", "gzip", "identity"] {
            let plain = vec![("Accept-Encoding".to_owned(), encoding.to_owned())];
            let mut full = plain.clone();
            full.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            let a = request(reqwest::Method::GET, url, &plain).await;
            let b = request(reqwest::Method::GET, url, &full).await;
            assert_eq!(a.status, 200, "{url} {encoding}");
            assert_eq!(b.status, a.status, "{url} {encoding}");
            let no_store = |reply: &Reply| {
                let mut headers = comparable(reply);
                if url == &launch {
                    for (k, v) in &mut headers {
                        if k == "cache-control" {
                            assert_eq!(v, "private, no-store", "{url} {encoding}");
                            *v = "public, max-age=31536000, immutable".into();
                        }
                    }
                }
                headers
            };
            assert_eq!(no_store(&b), comparable(&a), "{url} {encoding}");
            assert_eq!(b.body, a.body, "{url} {encoding}");
            assert_eq!(sha256_b64url(&decode_body(&b)), url_hash(&m, url));
            // The pre-warming HEAD: the GET's status and headers, no body.
            let head = request(reqwest::Method::HEAD, url, &full).await;
            assert_eq!(head.status, a.status, "{url} {encoding}");
            assert_eq!(no_store(&head), comparable(&a), "{url} {encoding}");
            assert!(head.body.is_empty());
        }
    }
    // Ranges and conditional requests are unaffected by them too.
    let mut full: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    full.push(("Range".into(), "bytes=0-9".into()));
    full.push(("Accept-Encoding".into(), "identity".into()));
    let ranged = request(reqwest::Method::GET, &launch, &full).await;
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body.len(), 10);
}

/// The `hash` the manifest gives for the asset at `url`.
fn url_hash(manifest: &Value, url: &str) -> String {
    std::iter::once(&manifest["launchAsset"])
        .chain(manifest["assets"].as_array().unwrap())
        .find(|a| a["url"] == url)
        .unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned()
}
