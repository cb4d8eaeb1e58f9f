//! Publishing through the real CLI and binary: bad exports get messages that say what to fix and
//! publish nothing; a server killed in the middle of a publish restarts into the old state, whole.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const RV: &str = "1.0.0";

/// `aloft publish` that must fail; returns its stderr.
fn publish_fails(setup: &Setup, export: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![
        "publish",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "demo",
        "--channel",
        "production",
        "--input",
        export.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = aloft(&args);
    assert!(
        !out.status.success(),
        "publish unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn served_ios_id(setup: &Setup) -> Option<String> {
    let reply = get(
        &setup.server.manifest_url("demo"),
        &without(device_headers("ios", RV, "production"), "expo-expect-signature"),
    )
    .await;
    match reply.status {
        204 => None,
        200 => {
            let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
            let m: Value = serde_json::from_slice(&parts[0].body).unwrap();
            Some(m["id"].as_str().unwrap().to_owned())
        }
        other => panic!("unexpected status {other}"),
    }
}

#[tokio::test]
async fn bad_exports_are_refused_with_a_fix_and_publish_nothing() {
    let setup = Setup::new();
    let dir = setup.dir.path();

    let export = make_export(dir, "bad-json", RV);
    write(&export.join("metadata.json"), b"{\"version\": 0,");
    let err = publish_fails(&setup, &export, &[]);
    assert!(err.contains("metadata.json") && err.contains("not valid JSON"), "{err}");

    let export = make_export(dir, "outside", RV);
    write(&dir.join("secret.txt"), b"not for publishing");
    let meta = json!({"version": 0, "bundler": "metro", "fileMetadata": {"ios": {
        "bundle": "../secret.txt", "assets": []}}});
    write(&export.join("metadata.json"), meta.to_string().as_bytes());
    let err = publish_fails(&setup, &export, &[]);
    assert!(
        err.contains("not a plain relative path inside the export folder"),
        "{err}"
    );

    // A symbolic link inside the export that leads out of it.
    let export = make_export(dir, "symlink", RV);
    std::os::unix::fs::symlink(dir.join("secret.txt"), export.join("assets/escape")).unwrap();
    let meta = json!({"version": 0, "bundler": "metro", "fileMetadata": {"ios": {
        "bundle": "assets/escape", "assets": []}}});
    write(&export.join("metadata.json"), meta.to_string().as_bytes());
    let err = publish_fails(&setup, &export, &[]);
    assert!(err.contains("resolves outside the export folder"), "{err}");

    let export = make_export(dir, "missing-file", RV);
    let meta = json!({"version": 0, "bundler": "metro", "fileMetadata": {"ios": {
        "bundle": "_expo/static/js/ios/gone.hbc", "assets": []}}});
    write(&export.join("metadata.json"), meta.to_string().as_bytes());
    let err = publish_fails(&setup, &export, &[]);
    assert!(err.contains("gone.hbc") && err.contains("does not exist"), "{err}");

    let export = make_export(dir, "no-config", RV);
    std::fs::remove_file(export.join("expoConfig.json")).unwrap();
    let err = publish_fails(&setup, &export, &[]);
    assert!(err.contains("npx expo config --type public --json"), "{err}");

    let export = make_export(dir, "fingerprint", RV);
    write(
        &export.join("expoConfig.json"),
        br#"{"slug":"demo","runtimeVersion":{"policy":"fingerprint"}}"#,
    );
    let err = publish_fails(&setup, &export, &[]);
    assert!(err.contains("--runtime-version"), "{err}");

    let export = make_export(dir, "good", RV);
    let err = publish_fails(
        &setup,
        &export,
        &["--platform", "ios", "--runtime-version", "has space"],
    );
    assert!(err.contains("invalid_runtime_version"), "{err}");

    let mut args = vec![
        "publish",
        "--server",
        &setup.server.base,
        "--token",
        "aloft_wrong",
        "--app",
        "demo",
    ];
    let export_str = export.to_str().unwrap().to_owned();
    args.extend(["--channel", "production", "--input", &export_str]);
    let out = aloft(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401 unauthorized"), "{err}");

    let mut args = vec![
        "publish",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "nope",
    ];
    args.extend(["--channel", "production", "--input", &export_str]);
    let out = aloft(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("app_not_found"), "{err}");

    // None of it was published.
    assert_eq!(served_ios_id(&setup).await, None);
    // And the good export publishes.
    let published = setup.publish(&export, "production", true, &[]);
    assert_eq!(served_ios_id(&setup).await, Some(ios_id(&published)));
}

/// Runs SQL on the server's database (SQLite in the data folder, or the PostgreSQL it was given)
/// and returns the rows as tab-separated lines.
fn sql(server: &Server, query: &str) -> Vec<Vec<String>> {
    let url = server
        .backend_args
        .iter()
        .position(|a| a == "--database-url")
        .map(|i| server.backend_args[i + 1].clone());
    let out = match url {
        Some(url) => std::process::Command::new("psql").args([url.as_str(), "-At", "-F", "\t", "-c", query]).output().unwrap(),
        None => std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys\nfor r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print('\\t'.join(map(str, r)))",
                server.data_dir.join("aloft.db").to_str().unwrap(),
                query,
            ])
            .output()
            .unwrap(),
    };
    assert!(
        out.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Every recorded blob is stored whole (served bytes hash to its name, at its size), no update
/// references a missing blob, and nothing is left in the upload staging folder.
async fn assert_store_consistent(server: &Server) {
    for row in sql(server, "SELECT hash, size FROM blobs") {
        let reply = get(&format!("{}/assets/{}", server.base, row[0]), &[]).await;
        assert_eq!(reply.status, 200, "recorded blob {} is not stored", row[0]);
        assert_eq!(sha256_b64url(&reply.body), row[0]);
        assert_eq!(reply.body.len().to_string(), row[1]);
    }
    let dangling = sql(
        server,
        "SELECT update_id FROM update_assets WHERE blob_hash NOT IN (SELECT hash FROM blobs)",
    );
    assert!(dangling.is_empty(), "updates reference missing blobs: {dangling:?}");
    let left: Vec<_> = std::fs::read_dir(server.data_dir.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "staging folder not empty: {left:?}");
}

#[tokio::test]
async fn a_server_killed_mid_publish_restarts_into_the_old_state() {
    let setup = Setup::new();
    let first = setup.publish(&make_export(setup.dir.path(), "before", RV), "production", true, &[]);
    let first_id = ios_id(&first);

    // Kill 1: in the middle of streaming a blob upload.
    let big = bytes_of("big upload", 4 << 20);
    let big_hash = sha256_b64url(&big);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let upload_url = format!("{}/api/v1/blobs/{big_hash}", setup.server.base);
    let token = setup.token.clone();
    let upload = tokio::spawn(async move {
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        reqwest::Client::new()
            .put(upload_url)
            .bearer_auth(token)
            .header("content-length", big.len())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    let chunk = bytes_of("big upload", 4 << 20)[..1 << 20].to_vec();
    tx.send(Ok(chunk)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Setup { dir, server, token } = setup;
    let server = server.crash_and_restart();
    drop(tx);
    let outcome = upload.await.unwrap();
    assert!(
        outcome.as_ref().map_or(true, |r| !r.status().is_success()),
        "an upload cut off by a crash cannot succeed: {outcome:?}"
    );
    let setup = Setup { server, dir, token };
    assert_eq!(served_ios_id(&setup).await, Some(first_id.clone()));
    let missing: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/blobs/missing", setup.server.base))
        .bearer_auth(&setup.token)
        .json(&json!({"hashes": [big_hash]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        missing["missing"],
        json!([big_hash]),
        "a half upload must not count as stored"
    );
    assert_store_consistent(&setup.server).await;

    // Kill 2: after the new blobs are stored, before the group commits.
    let export = make_export(setup.dir.path(), "after", RV);
    let client = reqwest::Client::new();
    let meta: Value = serde_json::from_slice(&std::fs::read(export.join("metadata.json")).unwrap()).unwrap();
    let mut paths: Vec<String> = vec![meta["fileMetadata"]["ios"]["bundle"].as_str().unwrap().to_owned()];
    for a in meta["fileMetadata"]["ios"]["assets"].as_array().unwrap() {
        paths.push(a["path"].as_str().unwrap().to_owned());
    }
    for path in &paths {
        let bytes = std::fs::read(export.join(path)).unwrap();
        let reply = client
            .put(format!("{}/api/v1/blobs/{}", setup.server.base, sha256_b64url(&bytes)))
            .bearer_auth(&setup.token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success());
    }
    let Setup { dir, server, token } = setup;
    let setup = Setup {
        server: server.crash_and_restart(),
        dir,
        token,
    };
    assert_eq!(
        served_ios_id(&setup).await,
        Some(first_id.clone()),
        "the old update is still served"
    );
    assert_store_consistent(&setup.server).await;

    // The old update is whole: its manifest and every asset.
    let reply = get(
        &setup.server.manifest_url("demo"),
        &without(device_headers("ios", RV, "production"), "expo-expect-signature"),
    )
    .await;
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    let m: Value = serde_json::from_slice(&parts[0].body).unwrap();
    for asset in std::iter::once(&m["launchAsset"]).chain(m["assets"].as_array().unwrap()) {
        let reply = get(asset["url"].as_str().unwrap(), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(sha256_b64url(&reply.body), asset["hash"].as_str().unwrap());
    }

    // And the next publish goes through, reusing what was uploaded before the crash.
    let after = setup.publish(&export, "production", true, &[]);
    assert_eq!(served_ios_id(&setup).await, Some(ios_id(&after)));
    assert_store_consistent(&setup.server).await;
}

/// The CLI signs with the key id it is given, and the device receives exactly that key id; a
/// publish without a key on an app whose devices expect signatures is refused unless
/// `--allow-unsigned` says so.
#[tokio::test]
async fn the_cli_signs_with_its_key_id_and_unsigned_needs_asking() {
    let setup = Setup::new();
    let dir = setup.dir.path();
    let key = setup.key();
    let export = make_export(dir, "k1", RV);
    let mut args = publish_args(&setup.server.base, &setup.token, "production", &export);
    args.extend(["--json", "--signing-key", &key, "--keyid", "release-7"]);
    let published: Value = serde_json::from_str(&aloft_ok(&args)).unwrap();
    assert_eq!(published["updates"][0]["signed"], true);

    let expect = r#"sig, keyid="release-7", alg="rsa-v1_5-sha256""#;
    let reply = get(
        &setup.server.manifest_url("demo"),
        &with(device_headers("ios", RV, "production"), "expo-expect-signature", expect),
    )
    .await;
    assert_eq!(reply.status, 200);
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    let signature = parse_signature_header(parts[0].header("expo-signature").unwrap());
    assert_eq!(signature["keyid"], "release-7");
    assert!(openssl_verify(&setup.certificate(), &parts[0].body, &signature["sig"]));
    // The device configured for `main` is not handed a signature under another key id.
    let reply = get(
        &setup.server.manifest_url("demo"),
        &device_headers("ios", RV, "production"),
    )
    .await;
    assert_eq!(reply.status, 400);

    // The next publish forgets the key: refused, with the way out, and nothing changes.
    let before = served_ios_id(&setup).await;
    let export = make_export(dir, "k2", RV);
    let err = publish_fails(&setup, &export, &[]);
    assert!(err.contains("signature_required"), "{err}");
    assert!(
        err.contains("--signing-key") && err.contains("--allow-unsigned"),
        "{err}"
    );
    assert_eq!(served_ios_id(&setup).await, before);
    // Asked for explicitly, it is published unsigned.
    let mut args = publish_args(&setup.server.base, &setup.token, "production", &export);
    args.extend(["--json", "--allow-unsigned"]);
    let published: Value = serde_json::from_str(&aloft_ok(&args)).unwrap();
    assert_eq!(published["updates"][0]["signed"], false);
    assert_ne!(served_ios_id(&setup).await, before);
    // --allow-unsigned with a key is a contradiction the CLI refuses.
    let mut args = publish_args(&setup.server.base, &setup.token, "production", &export);
    args.extend(["--allow-unsigned", "--signing-key", &key, "--keyid", "main"]);
    let out = aloft(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-unsigned"));
}
