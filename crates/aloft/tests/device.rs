//! End to end, as a device sees it: the real binary on a loopback port, keys from
//! `aloft keys generate`, publishes with `aloft publish`, requests exactly as expo-updates sends
//! them, and the checks of docs/protocol.md §12 (1-6, 8-11, 13) made with independent tools.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::collections::HashSet;

use serde_json::Value;
use support::*;

const RV: &str = "1.0.0";

/// The manifest part of a multipart reply, parsed by Python, with its signature header checked.
fn manifest_part(setup: &Setup, reply: &Reply) -> (Value, Vec<u8>) {
    assert_eq!(reply.status, 200, "body: {}", String::from_utf8_lossy(&reply.body));
    let content_type = reply.header("content-type").unwrap();
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");
    assert_eq!(reply.header("expo-protocol-version"), Some("1"));
    assert_eq!(reply.header("expo-sfv-version"), Some("0"));
    assert_eq!(reply.header("cache-control"), Some("private, max-age=0"));
    let parts = parse_multipart(content_type, &reply.body);
    assert_eq!(parts.len(), 1, "{parts:?}");
    let part = &parts[0];
    assert_eq!(part.name, "manifest");
    // §12.8: the signature is a dictionary of sf-strings and verifies over the exact part body.
    let sig = parse_signature_header(part.header("expo-signature").expect("signed manifest part"));
    assert_eq!(sig.get("keyid").map(String::as_str), Some("main"));
    assert_eq!(sig.get("alg").map(String::as_str), Some("rsa-v1_5-sha256"));
    assert!(
        openssl_verify(&setup.certificate(), &part.body, &sig["sig"]),
        "openssl rejects the signature"
    );
    // §12.9: one flipped byte and it no longer verifies.
    let mut tampered = part.body.clone();
    tampered[10] ^= 0x01;
    assert!(!openssl_verify(&setup.certificate(), &tampered, &sig["sig"]));
    (
        serde_json::from_slice(&part.body).expect("manifest JSON"),
        part.body.clone(),
    )
}

/// §12.1: every field the client parses, in the form it requires.
fn check_manifest_shape(m: &Value, expected_id: &str) {
    assert_eq!(m["id"], expected_id);
    let id = m["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let created = m["createdAt"].as_str().unwrap();
    let b = created.as_bytes();
    assert!(
        created.len() == 24
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && b[23] == b'Z'
            && created[20..23].bytes().all(|c| c.is_ascii_digit()),
        "createdAt {created}"
    );
    assert_eq!(m["runtimeVersion"], RV);
    assert!(m["metadata"].is_object());
    assert_eq!(m["extra"]["expoClient"]["slug"], "demo");
    let launch = &m["launchAsset"];
    assert_eq!(launch["fileExtension"], ".bundle");
    assert_eq!(launch["contentType"], "application/javascript");
    let mut keys = HashSet::new();
    for asset in std::iter::once(launch).chain(m["assets"].as_array().unwrap()) {
        let hash = asset["hash"].as_str().unwrap();
        assert!(
            hash.len() == 43
                && hash
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{hash}"
        );
        let key = asset["key"].as_str().unwrap();
        assert!(
            key.len() == 32 && key.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{key}"
        );
        assert!(keys.insert(key.to_owned()), "duplicate key {key}");
        assert!(asset["fileExtension"].as_str().unwrap().starts_with('.'));
        assert!(asset["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
        assert!(asset["contentType"].is_string());
    }
    assert_eq!(m["assets"].as_array().unwrap().len(), 2);
}

/// §12.2: every asset downloads, and its bytes match `hash` and `key`, in every encoding.
async fn check_assets(m: &Value) -> Vec<(String, Vec<u8>)> {
    let mut fetched = Vec::new();
    for asset in std::iter::once(&m["launchAsset"]).chain(m["assets"].as_array().unwrap()) {
        let url = asset["url"].as_str().unwrap();
        let mut identity = None;
        for encoding in [None, Some("gzip"), Some("br"), Some("zstd, br, gzip")] {
            let mut headers = vec![("accept".to_owned(), "*/*".to_owned())];
            if let Some(e) = encoding {
                headers.push(("accept-encoding".to_owned(), e.to_owned()));
            }
            let reply = get(url, &headers).await;
            assert_eq!(reply.status, 200, "{url}");
            assert!(reply.header("content-type").is_some());
            assert_eq!(
                reply.header("cache-control"),
                Some("public, max-age=31536000, immutable")
            );
            let body = decode_body(&reply);
            assert_eq!(
                sha256_b64url(&body),
                asset["hash"].as_str().unwrap(),
                "{url} with {encoding:?}"
            );
            assert_eq!(md5_hex(&body), asset["key"].as_str().unwrap());
            identity.get_or_insert(body);
        }
        fetched.push((url.to_owned(), identity.unwrap()));
    }
    fetched
}

#[tokio::test]
async fn a_device_gets_verifies_and_keeps_updates() {
    let setup = Setup::new();
    let url = setup.server.manifest_url("demo");
    let ios = device_headers("ios", RV, "production");
    let android = device_headers("android", RV, "production");

    // §12.4 before anything is published: the no-op answer.
    let reply = get(&url, &ios).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("expo-protocol-version"), Some("1"));

    let first = setup.publish(
        &make_export(setup.dir.path(), "one", RV),
        "production",
        true,
        &["--message", "first"],
    );
    let ios_id = update_id(&first, "ios");
    let android_id = update_id(&first, "android");
    assert_ne!(ios_id, android_id);

    // §12.1, §12.8, §12.9 for both platforms.
    let (m_ios, _) = manifest_part(&setup, &get(&url, &ios).await);
    check_manifest_shape(&m_ios, &ios_id);
    let (m_android, _) = manifest_part(&setup, &get(&url, &android).await);
    check_manifest_shape(&m_android, &android_id);
    assert_ne!(m_ios["launchAsset"]["hash"], m_android["launchAsset"]["hash"]);

    // §12.2.
    let old_assets = check_assets(&m_ios).await;
    check_assets(&m_android).await;

    // §12.3: already running it (iOS sends lower-case ids here too) → 204 with the version.
    for current in [ios_id.clone(), ios_id.to_uppercase()] {
        let reply = get(&url, &with(ios.clone(), "Expo-Current-Update-ID", &current)).await;
        assert_eq!(reply.status, 204, "{current}");
        assert_eq!(reply.header("expo-protocol-version"), Some("1"));
        assert!(reply.body.is_empty());
    }

    // §12.4: another runtime version → the same no-op; so is a channel that does not exist
    // yet (a build shipped before its channel's first publish).
    let reply = get(&url, &with(ios.clone(), "Expo-Runtime-Version", "2.0.0")).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("expo-protocol-version"), Some("1"));
    let reply = get(&url, &with(ios.clone(), "expo-channel-name", "nope")).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("expo-protocol-version"), Some("1"));
    assert!(reply.body.is_empty());

    // §12.5.
    for platform in ["web", "IOS", ""] {
        let reply = get(&url, &with(ios.clone(), "Expo-Platform", platform)).await;
        assert_eq!(reply.status, 400, "platform {platform:?}");
        let error: Value = serde_json::from_slice(&reply.body).unwrap();
        assert!(error["error"]["code"].as_str().unwrap().contains("platform"));
    }
    let reply = get(&url, &without(ios.clone(), "Expo-Platform")).await;
    assert_eq!(reply.status, 400);

    // §12.10: JSON negotiation, signature in the top-level header.
    for accept in ["application/json", "application/expo+json"] {
        let reply = get(&url, &with(ios.clone(), "Accept", accept)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(accept));
        assert_eq!(reply.header("expo-protocol-version"), Some("1"));
        let sig = parse_signature_header(reply.header("expo-signature").unwrap());
        assert!(openssl_verify(&setup.certificate(), &reply.body, &sig["sig"]));
        let m: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(m["id"], ios_id.as_str());
    }
    let reply = get(&url, &with(ios.clone(), "Accept", "text/html")).await;
    assert_eq!(reply.status, 406);

    // §12.11: no filters or server-defined headers are sent, so none can contradict the manifest.
    let reply = get(&url, &ios).await;
    assert!(reply.header("expo-manifest-filters").is_none());
    assert!(reply.header("expo-server-defined-headers").is_none());

    // §12.6: a second publish is served, strictly newer.
    let second = setup.publish(&make_export(setup.dir.path(), "two", RV), "production", true, &[]);
    let ios_id2 = second["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["platform"] == "ios")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (m2, _) = manifest_part(
        &setup,
        &get(&url, &with(ios.clone(), "Expo-Current-Update-ID", &ios_id)).await,
    );
    check_manifest_shape(&m2, &ios_id2);
    assert_ne!(ios_id2, ios_id);
    assert!(m2["createdAt"].as_str().unwrap() > m_ios["createdAt"].as_str().unwrap());
    check_assets(&m2).await;

    // §12.13: the first update's assets are still there, byte for byte, immutable.
    for (asset_url, bytes) in old_assets {
        let reply = get(&asset_url, &[("accept".into(), "*/*".into())]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, bytes);
        assert_eq!(
            reply.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
    }

    // Channels are isolated: a publish to staging creates it and leaves production alone.
    let staging = setup.publish(
        &make_export(setup.dir.path(), "three", RV),
        "staging",
        true,
        &["--platform", "android"],
    );
    let staging_id = staging["updates"][0]["id"].as_str().unwrap();
    let (m_staging, _) = manifest_part(&setup, &get(&url, &device_headers("android", RV, "staging")).await);
    assert_eq!(m_staging["id"], staging_id);
    let (m_prod, _) = manifest_part(&setup, &get(&url, &android).await);
    assert_ne!(m_prod["id"], staging_id);
    // A build without the channel header can name it in the URL.
    let reply = get(
        &format!("{url}?channel=staging"),
        &without(device_headers("android", RV, "x"), "expo-channel-name"),
    )
    .await;
    let (m_query, _) = manifest_part(&setup, &reply);
    assert_eq!(m_query["id"], staging_id);
}

#[tokio::test]
async fn server_side_signing_and_unsigned_updates() {
    let setup = Setup::new();
    let url = setup.server.manifest_url("demo");
    let ios = device_headers("ios", RV, "production");

    // Unsigned publish: a device that expects a signature gets a clear error, not the manifest.
    setup.publish(&make_export(setup.dir.path(), "u", RV), "production", false, &[]);
    let reply = get(&url, &ios).await;
    assert_eq!(reply.status, 400);
    let error: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["error"]["code"], "signature_unavailable");
    // Without expecting one, the unsigned manifest is served.
    let reply = get(&url, &without(ios.clone(), "expo-expect-signature")).await;
    assert_eq!(reply.status, 200);
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    assert!(parts[0].header("expo-signature").is_none());

    // With a server-side key, the server signs at publish time.
    aloft_ok(&[
        "apps",
        "set-signing-key",
        "demo",
        "--private-key",
        &setup.key(),
        "--keyid",
        "main",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
    ]);
    let published = setup.publish(&make_export(setup.dir.path(), "s", RV), "production", false, &[]);
    assert_eq!(published["updates"][0]["signed"], true);
    let (m, _) = manifest_part(&setup, &get(&url, &ios).await);
    let ios_id = published["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["platform"] == "ios")
        .unwrap()["id"]
        .clone();
    assert_eq!(m["id"], ios_id);

    // A device configured with another key id is told so.
    let reply = get(
        &url,
        &with(
            ios,
            "expo-expect-signature",
            r#"sig, keyid="other", alg="rsa-v1_5-sha256""#,
        ),
    )
    .await;
    assert_eq!(reply.status, 400);
    let error: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["error"]["code"], "signature_keyid_mismatch");
}

#[tokio::test]
async fn health_metrics_and_logs() {
    let setup = Setup::new();
    let reply = get(&format!("{}/healthz", setup.server.base), &[]).await;
    assert_eq!(reply.status, 200);
    let _ = get(
        &setup.server.manifest_url("demo"),
        &device_headers("ios", RV, "production"),
    )
    .await;
    let reply = get(&format!("{}/metrics", setup.server.base), &[]).await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    assert!(text.contains("aloft_http_requests_total"), "{text}");
    assert!(
        text.contains(r#"aloft_http_requests_total{route="/apps/{slug}/manifest",method="GET",status="204"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"aloft_manifest_responses_total{kind="no-update"} 1"#),
        "{text}"
    );
    assert!(text.contains("aloft_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("aloft_http_response_bytes_total"), "{text}");

    // Checks for a channel the app does not have are answered "no update" and counted per app.
    for _ in 0..2 {
        let reply = get(
            &setup.server.manifest_url("demo"),
            &device_headers("ios", RV, "no-such-channel"),
        )
        .await;
        assert_eq!(reply.status, 204);
    }
    let reply = get(&format!("{}/metrics", setup.server.base), &[]).await;
    let text = String::from_utf8(reply.body).unwrap();
    assert!(
        text.contains(r#"aloft_unknown_channel_checks_total{app="demo"} 2"#),
        "{text}"
    );
}

/// `aloft serve` raises its soft open-file limit to the hard one before it listens: every
/// connection and every blob file held open for sending takes a descriptor, and the usual soft
/// limit of 1,024 is below what a fleet's connections need.
#[cfg(target_os = "linux")]
#[test]
fn serve_raises_its_open_file_limit() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // Started from a shell that lowered only the soft limit, as a login shell's default does.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            r#"ulimit -Sn 256 && exec "$0" serve --listen 127.0.0.1:0 --data-dir "$1""#,
            BIN,
        ])
        .arg(dir.path())
        .env("ALOFT_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let row: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    // The shell left the soft limit at 256 below the hard one (or the hard one is 256 too).
    let (soft, hard) = (row[3], row[4]);
    assert_eq!(soft, hard, "{limits}");
}

/// An update check is recorded once, the same way, whichever lane answers it: the wire lane
/// (a fresh connection), the front lane (a connection hyper took over), or the router (`HEAD`, a
/// percent-encoded slug). Metrics are read from `/metrics`.
#[tokio::test]
async fn every_lane_records_a_check_once() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    let check = |method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: aloft\r\nexpo-platform: ios\r\nexpo-runtime-version: {RV}\r\n\
             expo-channel-name: production\r\nexpo-protocol-version: 1\r\n\r\n"
        )
    };
    let lanes = [
        // Wire lane.
        (check("GET", "/apps/demo/manifest"), 1),
        // A first request the wire lane hands to hyper; the check after it is the front lane's.
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: aloft\r\n\r\n{}",
                check("GET", "/apps/demo/manifest")
            ),
            2,
        ),
        // The router.
        (check("GET", "/apps/%64emo/manifest"), 1),
        (check("HEAD", "/apps/demo/manifest"), 1),
    ];
    for (request, answers) in &lanes {
        let reply = raw_exchange(&base, request.as_bytes(), *answers);
        assert_eq!(reply.matches("HTTP/1.1 204").count(), 1, "{request}\n{reply}");
    }
    let reply = get(&format!("{base}/metrics"), &[]).await;
    let text = String::from_utf8(reply.body).unwrap();
    let value = |series: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len()..].trim().parse().unwrap()
    };
    assert_eq!(
        value(r#"aloft_http_requests_total{route="/apps/{slug}/manifest",method="GET",status="204"}"#),
        3
    );
    assert_eq!(
        value(r#"aloft_http_requests_total{route="/apps/{slug}/manifest",method="HEAD",status="204"}"#),
        1
    );
    assert_eq!(value(r#"aloft_manifest_responses_total{kind="no-update"}"#), 4);
    assert_eq!(
        value(r#"aloft_http_requests_total{route="/healthz",method="GET",status="200"}"#),
        1
    );
    assert_eq!(
        value(r#"aloft_http_request_duration_seconds_count{route="/apps/{slug}/manifest"}"#),
        4
    );
}

#[tokio::test]
async fn http_framing_on_the_wire() {
    let setup = Setup::new();
    setup.publish(&make_export(setup.dir.path(), "wire", RV), "production", true, &[]);
    let base = setup.server.base.clone();
    let check: String = device_headers("ios", RV, "production")
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    tokio::task::spawn_blocking(move || {
        // HTTP/1.1 without Host: refused with a JSON error, as RFC 9112 requires.
        let reply = raw_exchange(&base, b"GET /apps/demo/manifest HTTP/1.1\r\n\r\n", 1);
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(reply.contains(r#""code":"missing_host""#), "{reply}");
        // HTTP/1.0 has no Host requirement.
        let reply = raw_exchange(&base, b"GET /healthz HTTP/1.0\r\n\r\n", 1);
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        // Two checks pipelined on one keep-alive connection: both answered in order, each with
        // its length, so the client can frame them.
        let one = format!("GET /apps/demo/manifest HTTP/1.1\r\nHost: ota.test\r\n{check}\r\n");
        let reply = raw_exchange(&base, format!("{one}{one}").as_bytes(), 2);
        let heads: Vec<&str> = reply.matches("HTTP/1.1 200 OK\r\n").collect();
        assert_eq!(heads.len(), 2, "{reply}");
        let lengths: Vec<&str> = reply
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths.len(), 2, "{reply}");
        assert_eq!(lengths[0], lengths[1]);
    })
    .await
    .unwrap();
}

/// Plain checks are answered by the wire lane; an encoded slug takes hyper and the router. Every
/// kind of answer must be the same bytes on the wire, whichever lane gives it.
#[tokio::test]
async fn wire_lane_and_hyper_answer_alike() {
    let setup = Setup::new();
    let published = setup.publish(&make_export(setup.dir.path(), "lanes", RV), "production", true, &[]);
    let (ios_id, android_id) = (update_id(&published, "ios"), update_id(&published, "android"));
    // Android, already running the newest: the no-update answer.
    let android_current = with(
        device_headers("android", RV, "production"),
        "expo-current-update-id",
        &android_id,
    );
    let base = setup.server.base.clone();
    let headers = |h: Vec<(String, String)>| -> String { h.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect() };
    let plain = device_headers("ios", RV, "production");
    let cases = vec![
        ("manifest", headers(plain.clone()), "HTTP/1.1 200"),
        (
            "bad platform",
            headers(with(plain.clone(), "expo-platform", "web")),
            "HTTP/1.1 400",
        ),
        (
            "unknown channel",
            headers(with(plain.clone(), "expo-channel-name", "nope")),
            "HTTP/1.1 204",
        ),
        (
            "html only",
            headers(with(plain.clone(), "accept", "text/html")),
            "HTTP/1.1 406",
        ),
        (
            "up to date",
            headers(with(plain.clone(), "expo-current-update-id", &ios_id)),
            "HTTP/1.1 204",
        ),
        (
            "upper-case id",
            headers(with(plain.clone(), "expo-current-update-id", &ios_id.to_uppercase())),
            "HTTP/1.1 204",
        ),
        (
            "android",
            headers(device_headers("android", RV, "production")),
            "HTTP/1.1 200",
        ),
    ];
    tokio::task::spawn_blocking(move || {
        for (what, headers, status) in cases {
            let wire = raw_exchange(
                &base,
                format!("GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
                1,
            );
            let hyper = raw_exchange(
                &base,
                format!("GET /apps/%64emo/manifest HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
                1,
            );
            assert!(wire.starts_with(status), "{what}: {wire}");
            assert!(wire.to_ascii_lowercase().contains("\r\ndate: "), "{what}: {wire}");
            assert_eq!(without_date(&wire), without_date(&hyper), "{what}");
        }

        // A request written a few bytes at a time is read whole.
        let request = format!(
            "GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\n{}\r\n",
            headers(device_headers("ios", RV, "production"))
        );
        let addr = base.strip_prefix("http://").unwrap();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        for chunk in request.as_bytes().chunks(7) {
            stream.write_all(chunk).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stream
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");

        // Pipelined: a check, then a request only hyper answers, then a check again on the
        // connection hyper now owns. All three in order.
        let check = format!(
            "GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\n{}\r\n",
            headers(android_current.clone())
        );
        let reply = raw_exchange(
            &base,
            format!("{check}GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n{check}").as_bytes(),
            3,
        );
        let statuses: Vec<&str> = reply.matches("HTTP/1.1 ").collect();
        assert_eq!(statuses.len(), 3, "{reply}");
        let first = reply.find("HTTP/1.1 204").unwrap();
        let health = reply.find("HTTP/1.1 200 OK").unwrap();
        let last = reply.rfind("HTTP/1.1 204").unwrap();
        assert!(first < health && health < last, "{reply}");
        assert!(reply.contains("\r\n\r\nok\n"), "{reply}");

        // A check with a body goes to hyper, which reads the body as a body: the check pipelined
        // after it is answered, not mistaken for part of the first.
        let with_body = format!(
            "GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n{}\r\nGET /",
            headers(android_current.clone())
        );
        let reply = raw_exchange(&base, format!("{with_body}{check}").as_bytes(), 2);
        assert_eq!(reply.matches("HTTP/1.1 204").count(), 2, "{reply}");

        // `Connection: close` is honoured: the answer, then the end of the stream.
        let reply = raw_exchange(
            &base,
            format!(
                "GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}\r\n",
                headers(android_current.clone())
            )
            .as_bytes(),
            1,
        );
        assert!(reply.starts_with("HTTP/1.1 204"), "{reply}");
        assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    })
    .await
    .unwrap();
}

/// Seconds until the server closes this connection (reads until end of stream, discarding
/// answers); panics after `limit`.
fn seconds_until_closed(stream: &mut std::net::TcpStream, limit: f64) -> f64 {
    use std::io::Read;
    let start = std::time::Instant::now();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed().as_secs_f64(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed().as_secs_f64(),
            _ => assert!(start.elapsed().as_secs_f64() < limit, "still open after {limit} s"),
        }
    }
}

/// Idle connections, and ones that send a request head too slowly, are closed, in both lanes.
#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), &["--idle-timeout-seconds", "1"]);
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let connect = || std::net::TcpStream::connect(&addr).unwrap();
        // Never sends anything.
        let t = seconds_until_closed(&mut connect(), 4.0);
        assert!(t >= 0.9, "closed after {t:.2} s, before the timeout");
        // Starts a check's head and never finishes it.
        let mut slow = connect();
        slow.write_all(b"GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\nexpo-platform: ios\r\n")
            .unwrap();
        seconds_until_closed(&mut slow, 4.0);
        // Asks one question that hyper answers, then stays idle.
        let mut handed = connect();
        handed.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        seconds_until_closed(&mut handed, 4.0);
        // A connection that keeps asking stays open past the timeout.
        let mut busy = connect();
        busy.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let check =
            b"GET /apps/demo/manifest HTTP/1.1\r\nHost: t\r\nexpo-platform: ios\r\nexpo-runtime-version: 1\r\n\r\n";
        let start = std::time::Instant::now();
        while start.elapsed().as_secs_f64() < 2.5 {
            busy.write_all(check).unwrap();
            let mut buf = [0u8; 4096];
            let n = std::io::Read::read(&mut busy, &mut buf).unwrap();
            assert!(n > 0, "closed while busy after {:.2} s", start.elapsed().as_secs_f64());
            assert!(
                buf.starts_with(b"HTTP/1.1 404"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
}

/// The end-to-end multipart check is as strict as the native clients: each of these framings,
/// which one of them would refuse or misread, fails it; the server's own framing passes.
#[test]
fn the_multipart_check_refuses_what_a_client_would() {
    let ct = "multipart/mixed; boundary=b0";
    let good = b"--b0\r\ncontent-type: application/json\r\ncontent-disposition: form-data; name=\"manifest\"\r\nexpo-signature: sig=\"x\"\r\n\r\n{}\r\n--b0--\r\n";
    check_multipart_framing(ct, good);
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        ("no final CRLF", ct, good[..good.len() - 2].to_vec()),
        ("no boundary", "multipart/mixed", good.to_vec()),
        ("no part", ct, b"--b0--\r\n".to_vec()),
        (
            "signature header spelled otherwise",
            ct,
            String::from_utf8_lossy(good)
                .replace("expo-signature", "Expo-Signature")
                .into_bytes(),
        ),
        (
            "no name parameter",
            ct,
            String::from_utf8_lossy(good)
                .replace("; name=\"manifest\"", "")
                .into_bytes(),
        ),
        (
            "bare LF",
            ct,
            String::from_utf8_lossy(good)
                .replace("\r\n\r\n{}", "\n\n{}")
                .into_bytes(),
        ),
    ];
    for (what, content_type, body) in bad {
        let refused = std::panic::catch_unwind(|| check_multipart_framing(content_type, &body)).is_err();
        assert!(refused, "{what} was accepted");
    }
}
