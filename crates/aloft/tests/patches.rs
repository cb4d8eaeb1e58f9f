//! Bundle patches end to end (docs/patches.md, docs/protocol.md §9): the real binary computes
//! patches in the background after a publish, and a device that asks for its new launch asset
//! with `A-IM: bsdiff` gets `226 IM Used` with a BSDIFF40 body, which Debian's `bspatch` (an
//! implementation not written here) turns into the bytes the manifest's `hash` names. Every
//! other request gets the full bundle.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aloft_store::testing::Backend;
use serde_json::{Value, json};
use support::*;

const RV: &str = "1.0.0";

/// A bundle as Hermes bytecode looks to a compressor (incompressible), the same across exports
/// of one platform except for a few bytes `tag` changes in its middle: what a one-line change
/// does to a real bundle.
fn bundle(platform: &str, tag: &str) -> Vec<u8> {
    let mut bytes = [
        b"\xc6\x1f\xbc\x03\xc1\x03\x19\x1f".as_slice(),
        &bytes_of(&format!("bundle-{platform}"), 120_000),
    ]
    .concat();
    let line = format!("// {tag} //");
    bytes.splice(60_000..60_000, line.bytes());
    bytes
}

/// An `expo export` folder whose bundles are [`bundle`]s and with one image.
fn export(dir: &Path, tag: &str) -> PathBuf {
    let dist = dir.join(format!("dist-{tag}"));
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &bytes_of("png", 2000)].concat();
    let png_name = md5_hex(&png);
    write(&dist.join("assets").join(&png_name), &png);
    let mut fm = serde_json::Map::new();
    for platform in ["ios", "android"] {
        let path = format!(
            "_expo/static/js/{platform}/index-{}.hbc",
            &md5_hex(tag.as_bytes())[..12]
        );
        write(&dist.join(&path), &bundle(platform, tag));
        fm.insert(
            platform.into(),
            json!({"bundle": path, "assets": [{"path": format!("assets/{png_name}"), "ext": "png"}]}),
        );
    }
    write(
        &dist.join("metadata.json"),
        json!({"version": 0, "bundler": "metro", "fileMetadata": fm})
            .to_string()
            .as_bytes(),
    );
    let config = json!({"name": "demo", "slug": "demo", "version": "1.0.0", "runtimeVersion": RV});
    write(&dist.join("expoConfig.json"), config.to_string().as_bytes());
    dist
}

fn publish(server: &Server, token: &str, dir: &Path, tag: &str) -> Value {
    publish_json(&server.base, token, &export(dir, tag))
}

/// The launch asset (URL and hash) and the image URL of the manifest a device gets.
async fn manifest(server: &Server, platform: &str) -> (String, String, String) {
    let headers = without(device_headers(platform, RV, "production"), "expo-expect-signature");
    let reply = get(&server.manifest_url("demo"), &headers).await;
    assert_eq!(reply.status, 200);
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    let m: Value = serde_json::from_slice(&parts[0].body).unwrap();
    (
        m["launchAsset"]["url"].as_str().unwrap().to_owned(),
        m["launchAsset"]["hash"].as_str().unwrap().to_owned(),
        m["assets"][0]["url"].as_str().unwrap().to_owned(),
    )
}

/// An asset request as the client makes it (docs/protocol.md §1.2), asking for a patch from
/// `current` when `a_im`.
fn asset_headers(platform: &str, current: &str, requested: &str, a_im: bool) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        ("Accept", "*/*"),
        ("Accept-Encoding", "br, gzip"),
        ("Expo-Platform", platform),
        ("Expo-Protocol-Version", "1"),
        ("Expo-API-Version", "1"),
        ("Expo-Updates-Environment", "BARE"),
        ("Expo-Runtime-Version", RV),
        ("EAS-Client-ID", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        ("Expo-Embedded-Update-ID", "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b"),
        ("Expo-Current-Update-ID", current),
        ("Expo-Requested-Update-ID", requested),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if a_im {
        h.push(("A-IM".into(), "bsdiff".into()));
    }
    h
}

async fn head(url: &str, headers: &[(String, String)]) -> Reply {
    let mut request = reqwest::Client::new().head(url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// Applies a patch with Debian's `bspatch`.
fn bspatch(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (o, n, p) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("patch"));
    std::fs::write(&o, old).unwrap();
    std::fs::write(&p, patch).unwrap();
    let out = Command::new("bspatch")
        .args([&o, &n, &p])
        .output()
        .expect("the bspatch command (Debian package bsdiff) is needed to apply patches independently");
    assert!(
        out.status.success(),
        "bspatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(n).unwrap()
}

/// `aloft updates show` of a group: each update's patches.
fn shown_patches(server: &Server, token: &str, group: &str, update: &str) -> Vec<Value> {
    let out = aloft_ok(&[
        "updates",
        "show",
        group,
        "--app",
        "demo",
        "--server",
        &server.base,
        "--token",
        token,
    ]);
    let g: Value = serde_json::from_str(&out).unwrap();
    let u = g["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == update)
        .unwrap();
    u["patches"].as_array().cloned().unwrap_or_default()
}

/// Waits until the patch from `base` to `update` is in `state` (one minute at most).
fn wait_for_patch(server: &Server, token: &str, group: &str, update: &str, base: &str, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let patches = shown_patches(server, token, group, update);
        if let Some(p) = patches.iter().find(|p| p["base"] == base && p["state"] == state) {
            return p.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {state} patch from {base} to {update}: {patches:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Publishes updates "one" and "two" and waits for the iOS patch between them; returns the
/// iOS update ids of the base and the target.
fn publish_patched_pair(server: &Server, token: &str, dir: &Path) -> (String, String) {
    let u1 = publish(server, token, dir, "one");
    let u2 = publish(server, token, dir, "two");
    let (on_u1, to_u2) = (ios_id(&u1), ios_id(&u2));
    wait_for_patch(server, token, u2["group_id"].as_str().unwrap(), &to_u2, &on_u1, "done");
    (on_u1, to_u2)
}

fn vary(reply: &Reply) -> String {
    reply.header("vary").unwrap_or_default().to_ascii_lowercase()
}

/// Checks a 226 answer and returns the bundle `bspatch` makes of it from `old`.
fn applied(reply: &Reply, base: &str, old: &[u8]) -> Vec<u8> {
    let shown = String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
    assert_eq!(reply.status, 226, "{shown:?}");
    assert_eq!(reply.header("im"), Some("bsdiff"));
    assert_eq!(reply.header("expo-base-update-id"), Some(base));
    assert_eq!(reply.header("cache-control"), Some("private, no-store"));
    assert!(vary(reply).contains("a-im") && vary(reply).contains("expo-current-update-id"));
    assert!(reply.body.starts_with(b"BSDIFF40"));
    bspatch(old, &reply.body)
}

#[tokio::test]
async fn a_device_on_an_earlier_update_gets_a_patch() {
    let s = Setup::new();
    let u1 = publish(&s.server, &s.token, s.dir.path(), "one");
    let u2 = publish(&s.server, &s.token, s.dir.path(), "two");
    let group = u2["group_id"].as_str().unwrap();
    let (url, hash, png_url) = manifest(&s.server, "ios").await;
    let (on_u1, to_u2) = (ios_id(&u1), ios_id(&u2));
    assert_eq!(hash, sha256_b64url(&bundle("ios", "two")));

    let p = wait_for_patch(&s.server, &s.token, group, &to_u2, &on_u1, "done");
    assert_eq!(p["base_kind"], "update");
    let (size, full) = (p["size"].as_u64().unwrap(), p["full_size"].as_u64().unwrap());
    assert!(size * 10 < full, "a patch of {size} bytes for a bundle of {full}");

    // With A-IM from U1: the patch, which bspatch turns into U2's bundle.
    let asks = asset_headers("ios", &on_u1, &to_u2, true);
    let reply = get(&url, &asks).await;
    let rebuilt = applied(&reply, &on_u1, &bundle("ios", "one"));
    assert_eq!(sha256_b64url(&rebuilt), hash);
    assert_eq!(reply.body.len() as u64, size);
    // HEAD answers as GET does, without the body.
    let headed = head(&url, &asks).await;
    assert_eq!(headed.status, 226);
    assert!(headed.body.is_empty());
    for name in [
        "im",
        "expo-base-update-id",
        "content-length",
        "cache-control",
        "vary",
        "content-type",
    ] {
        assert_eq!(headed.header(name), reply.header(name), "{name}");
    }

    // Without A-IM: the full bundle, cacheable as before, varying on what a patch depends on.
    let full_reply = get(&url, &asset_headers("ios", &on_u1, &to_u2, false)).await;
    assert_eq!(full_reply.status, 200);
    assert_eq!(sha256_b64url(&decode_body(&full_reply)), hash);
    assert_eq!(
        full_reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(vary(&full_reply).contains("a-im"), "{}", vary(&full_reply));
    let full_head = head(&url, &asset_headers("ios", &on_u1, &to_u2, false)).await;
    assert_eq!(full_head.status, 200);
    assert_eq!(full_head.header("content-length"), full_reply.header("content-length"));

    // An unknown base, or the requested update itself: the full bundle, never stored by a cache.
    for current in [uuid::Uuid::new_v4().to_string(), to_u2.clone()] {
        let other = get(&url, &asset_headers("ios", &current, &to_u2, true)).await;
        assert_eq!(other.status, 200);
        assert_eq!(sha256_b64url(&decode_body(&other)), hash);
        assert_eq!(other.header("cache-control"), Some("private, no-store"));
        assert!(other.header("im").is_none());
    }
    // A non-launch asset: never a patch, and no patch headers in its Vary.
    let png = get(&png_url, &asks).await;
    assert_eq!(png.status, 200);
    assert!(png.header("im").is_none());
    assert_eq!(vary(&png), "accept-encoding");
    // The Android bundle was patched too.
    let (android_url, android_hash, _) = manifest(&s.server, "android").await;
    let (a1, a2) = (update_id(&u1, "android"), update_id(&u2, "android"));
    wait_for_patch(&s.server, &s.token, group, &a2, &a1, "done");
    let reply = get(&android_url, &asset_headers("android", &a1, &a2, true)).await;
    assert_eq!(
        sha256_b64url(&applied(&reply, &a1, &bundle("android", "one"))),
        android_hash
    );

    // Patches off for the app: the full bundle; on again: patches again.
    let set = |state: &str| {
        aloft_ok(&[
            "apps",
            "set-patches",
            "demo",
            state,
            "--server",
            &s.server.base,
            "--token",
            &s.token,
        ])
    };
    assert!(set("off").contains("whole bundles"));
    let off = get(&url, &asks).await;
    assert_eq!(off.status, 200);
    assert_eq!(sha256_b64url(&decode_body(&off)), hash);
    assert!(set("on").contains("patches"));
    assert_eq!(get(&url, &asks).await.status, 226);

    // Served counts and bytes saved show in `aloft updates show` (stored every two seconds).
    let start = Instant::now();
    loop {
        let p = wait_for_patch(&s.server, &s.token, group, &to_u2, &on_u1, "done");
        if p["hits"].as_u64() == Some(2) {
            assert_eq!(p["bytes_saved"].as_u64(), Some(2 * (full - size)));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "hits never stored: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and in the group's insights.
    let out = aloft_ok(&[
        "insights",
        group,
        "--app",
        "demo",
        "--server",
        &s.server.base,
        "--token",
        &s.token,
        "--json",
    ]);
    let insights: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ios = insights["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == "ios")
        .unwrap();
    assert_eq!(ios["patchesServed"].as_u64(), Some(2), "{ios}");
    assert_eq!(ios["patchBytesSaved"].as_u64(), Some(2 * (full - size)), "{ios}");
    // The setting is in the audit log.
    let audit = aloft_ok(&["audit", "--server", &s.server.base, "--token", &s.token]);
    assert!(audit.contains("app.patches.set"), "{audit}");
}

#[tokio::test]
async fn a_patch_nobody_planned_is_computed_when_a_device_asks() {
    // A publish plans patches from the five updates before it; a device on an older one (or
    // any known base) asks, and from then on gets a patch too. HEAD (as `eas update`
    // pre-warms) is enough to ask.
    let s = Setup::new();
    let tags = ["one", "two", "three", "four", "five", "six", "seven"];
    let published: Vec<Value> = tags
        .iter()
        .map(|t| publish(&s.server, &s.token, s.dir.path(), t))
        .collect();
    let (first, last) = (&published[0], &published[tags.len() - 1]);
    let group = last["group_id"].as_str().unwrap();
    let (on_u1, to_u7) = (ios_id(first), ios_id(last));
    let (url, hash, _) = manifest(&s.server, "ios").await;
    let planned = |patches: &[Value]| patches.iter().filter(|p| p["base_kind"] == "update").count();
    let on_u2 = ios_id(&published[1]);
    wait_for_patch(&s.server, &s.token, group, &to_u7, &on_u2, "done");
    let before = shown_patches(&s.server, &s.token, group, &to_u7);
    assert_eq!(planned(&before), 5, "{before:#?}");
    assert!(before.iter().all(|p| p["base"] != on_u1.as_str()), "{before:#?}");

    let asks = asset_headers("ios", &on_u1, &to_u7, true);
    let first_ask = head(&url, &asks).await;
    assert_eq!(first_ask.status, 200);
    assert_eq!(first_ask.header("cache-control"), Some("private, no-store"));
    // A base nobody published asks for nothing the server can make.
    let stranger = uuid::Uuid::new_v4().to_string();
    let unknown = get(&url, &asset_headers("ios", &stranger, &to_u7, true)).await;
    assert_eq!(unknown.status, 200);

    wait_for_patch(&s.server, &s.token, group, &to_u7, &on_u1, "done");
    // The server forgets its last "no patch" once the job has told it of the stored patch,
    // a moment after the database shows it done.
    let start = Instant::now();
    let reply = loop {
        let reply = get(&url, &asks).await;
        if reply.status != 200 || start.elapsed() > Duration::from_secs(10) {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sha256_b64url(&applied(&reply, &on_u1, &bundle("ios", "one"))), hash);
    let after = shown_patches(&s.server, &s.token, group, &to_u7);
    assert_eq!(planned(&after), 6, "{after:#?}");
    assert!(after.iter().all(|p| p["base"] != stranger.as_str()), "{after:#?}");
}

/// Writes a zip with Python's `zipfile` (an implementation not written here), deflated.
fn zip(path: &Path, entries: &[(&str, &[u8])]) {
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::from("import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n");
    for (i, (name, bytes)) in entries.iter().enumerate() {
        let file = dir.path().join(i.to_string());
        std::fs::write(&file, bytes).unwrap();
        script.push_str(&format!("z.write({:?}, {name:?})\n", file.display().to_string()));
    }
    script.push_str("z.close()\n");
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn app_manifest(id: &str) -> Vec<u8> {
    json!({"id": id, "commitTime": 1_714_566_896_789u64, "assets": []})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn a_device_on_the_embedded_bundle_gets_a_patch() {
    let s = Setup::new();
    let (e_android, e_ios) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let apk = s.path("app-release.apk");
    let android_bundle = bundle("android", "embedded");
    zip(
        &apk,
        &[
            ("AndroidManifest.xml", b"\x03\x00\x08\x00"),
            ("assets/app.manifest", &app_manifest(&e_android)),
            ("assets/index.android.bundle", &android_bundle),
        ],
    );
    let ipa = s.path("Demo.ipa");
    let ios_bundle = bundle("ios", "embedded");
    let plist = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\n\
         <key>EXUpdatesRuntimeVersion</key>\n<string>{RV}</string>\n</dict></plist>\n"
    );
    zip(
        &ipa,
        &[
            ("Payload/Demo.app/Info.plist", b"<plist/>"),
            ("Payload/Demo.app/Expo.plist", plist.as_bytes()),
            ("Payload/Demo.app/main.jsbundle", &ios_bundle),
            ("Payload/Demo.app/EXUpdates.bundle/app.manifest", &app_manifest(&e_ios)),
        ],
    );
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--app", "demo", "--server", &s.server.base, "--token", &s.token]);
        aloft(&all)
    };
    // An Android package does not say its runtime version; the CLI says what to give.
    let refused = cli(&["embedded", "add", apk.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--runtime-version"));
    // A file that is no package, without the flags a bundle needs.
    let refused = cli(&[
        "embedded",
        "add",
        s.path("Demo.ipa").with_extension("jsbundle").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--update-id"));
    let broken = s.path("broken.ipa");
    std::fs::write(&broken, b"not a zip").unwrap();
    let refused = cli(&["embedded", "add", broken.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a readable zip"),
        "{refused:?}"
    );

    let u1 = publish(&s.server, &s.token, s.dir.path(), "one");
    let added = cli(&[
        "embedded",
        "add",
        apk.to_str().unwrap(),
        "--runtime-version",
        RV,
        "--json",
    ]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(added["id"], e_android.as_str());
    assert_eq!(added["size"].as_u64(), Some(android_bundle.len() as u64));
    assert!(cli(&["embedded", "add", ipa.to_str().unwrap()]).status.success());
    // Registered twice: refused with its code.
    let again = cli(&["embedded", "add", ipa.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("embedded_exists"));
    let listed = String::from_utf8(cli(&["embedded", "list"]).stdout).unwrap();
    assert!(listed.contains(&e_android) && listed.contains(&e_ios), "{listed}");

    // Registering made patches to the update published before it; a new publish gets them too.
    let g1 = u1["group_id"].as_str().unwrap();
    wait_for_patch(&s.server, &s.token, g1, &ios_id(&u1), &e_ios, "done");
    let u2 = publish(&s.server, &s.token, s.dir.path(), "two");
    let g2 = u2["group_id"].as_str().unwrap();
    for (platform, embedded_id, old) in [("ios", &e_ios, &ios_bundle), ("android", &e_android, &android_bundle)] {
        let target = update_id(&u2, platform);
        let p = wait_for_patch(&s.server, &s.token, g2, &target, embedded_id, "done");
        assert_eq!(p["base_kind"], "embedded");
        let (url, hash, _) = manifest(&s.server, platform).await;
        // The device runs its embedded update: that is its current update id.
        let mut asks = asset_headers(platform, embedded_id, &target, true);
        asks = with(asks, "Expo-Embedded-Update-ID", embedded_id);
        let reply = get(&url, &asks).await;
        assert_eq!(sha256_b64url(&applied(&reply, embedded_id, old)), hash, "{platform}");
    }

    let removed = cli(&["embedded", "remove", &e_android]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let listed = String::from_utf8(cli(&["embedded", "list"]).stdout).unwrap();
    assert!(!listed.contains(&e_android) && listed.contains(&e_ios), "{listed}");
    let gone = cli(&["embedded", "remove", &e_android]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("embedded_not_found"));
}

#[tokio::test]
async fn pending_patches_are_computed_after_a_restart() {
    let Setup { dir, server, token } = Setup::new();
    // Started again (same address, so manifest URLs stay valid) as a server that computes no
    // patches: what it leaves pending is only in the database.
    let listen = server.base.trim_start_matches("http://").to_owned();
    let (data, backend_args) = (server.data_dir.clone(), server.backend_args.clone());
    server.kill();
    let mut idle_args = backend_args.clone();
    idle_args.extend(["--patch-workers".to_owned(), "0".to_owned()]);
    let idle = Server::start_on(&data, &listen, idle_args);
    let u1 = publish(&idle, &token, dir.path(), "one");
    let u2 = publish(&idle, &token, dir.path(), "two");
    let group = u2["group_id"].as_str().unwrap();
    let (on_u1, to_u2) = (ios_id(&u1), ios_id(&u2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for_patch(&idle, &token, group, &to_u2, &on_u1, "pending");
    let (url, _, _) = manifest(&idle, "ios").await;
    assert_eq!(get(&url, &asset_headers("ios", &on_u1, &to_u2, true)).await.status, 200);

    // Killed, and started again as a server that computes: the pending work is done.
    idle.kill();
    let server = Server::start_on(&data, &listen, backend_args);
    wait_for_patch(&server, &token, group, &to_u2, &on_u1, "done");
    let (url, hash, _) = manifest(&server, "ios").await;
    let reply = get(&url, &asset_headers("ios", &on_u1, &to_u2, true)).await;
    assert_eq!(sha256_b64url(&applied(&reply, &on_u1, &bundle("ios", "one"))), hash);
}

#[tokio::test]
async fn a_server_killed_right_after_a_publish_computes_its_patches_after_a_restart() {
    let Setup { dir, server, token } = Setup::new();
    let u1 = publish(&server, &token, dir.path(), "one");
    let u2 = publish(&server, &token, dir.path(), "two");
    // SIGKILL at once: the patches are pending, or claimed by a computation that dies with it.
    let server = server.crash_and_restart();
    let (on_u1, to_u2) = (ios_id(&u1), ios_id(&u2));
    wait_for_patch(
        &server,
        &token,
        u2["group_id"].as_str().unwrap(),
        &to_u2,
        &on_u1,
        "done",
    );
    let (url, hash, _) = manifest(&server, "ios").await;
    let reply = get(&url, &asset_headers("ios", &on_u1, &to_u2, true)).await;
    assert_eq!(sha256_b64url(&applied(&reply, &on_u1, &bundle("ios", "one"))), hash);
}

#[tokio::test]
async fn behind_a_cdn_patches_are_never_cached() {
    // Manifests link assets through a CDN whose origin is Aloft; what Aloft answers the CDN
    // must keep any cache in between from storing a patch, or a full bundle as the answer to a
    // patch request.
    let dir = tempfile::tempdir().unwrap();
    let location = Backend::from_env().fresh(&dir.path().join("data"));
    let mut token_args = vec!["tokens".to_owned(), "create".to_owned()];
    token_args.extend(location.token_args());
    let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
    let token = aloft_ok(&token_args).trim().to_owned();
    let mut args = location.serve_args();
    args.extend(["--asset-base-url".to_owned(), "https://cdn.example.com".to_owned()]);
    let redirect = location.s3.is_some();
    if redirect {
        // S3 storage: presigned redirects for everything but patches.
        args.extend(["--asset-delivery".to_owned(), "redirect".to_owned()]);
    }
    let server = Server::start_on(&dir.path().join("data"), "127.0.0.1:0", args);
    aloft_ok(&["apps", "create", "demo", "--server", &server.base, "--token", &token]);
    let (on_u1, to_u2) = publish_patched_pair(&server, &token, dir.path());
    let (cdn_url, hash, _) = manifest(&server, "ios").await;
    assert!(cdn_url.starts_with("https://cdn.example.com/assets/"), "{cdn_url}");
    // What the CDN fetches from its origin.
    let url = cdn_url.replace("https://cdn.example.com", &server.base);

    let reply = get(&url, &asset_headers("ios", &on_u1, &to_u2, true)).await;
    assert_eq!(sha256_b64url(&applied(&reply, &on_u1, &bundle("ios", "one"))), hash);
    let no_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut plain = no_client.get(&url);
    for (k, v) in asset_headers("ios", &on_u1, &to_u2, false) {
        plain = plain.header(k, v);
    }
    let plain = plain.send().await.unwrap();
    let vary = plain.headers()["vary"].to_str().unwrap().to_ascii_lowercase();
    assert!(
        vary.contains("a-im") && vary.contains("expo-current-update-id"),
        "{vary}"
    );
    if redirect {
        assert_eq!(plain.status(), 302);
        assert_eq!(plain.headers()["cache-control"], "private, no-store");
    } else {
        assert_eq!(plain.status(), 200);
        assert_eq!(plain.headers()["cache-control"], "public, max-age=31536000, immutable");
    }
    // A patch request whose base has no patch: the full bundle, not to be stored.
    let mut miss = no_client.get(&url);
    for (k, v) in asset_headers("ios", &uuid::Uuid::new_v4().to_string(), &to_u2, true) {
        miss = miss.header(k, v);
    }
    let miss = miss.send().await.unwrap();
    assert_eq!(miss.headers()["cache-control"], "private, no-store");
    assert!(miss.headers().get("im").is_none());
}

#[tokio::test]
async fn a_patch_computed_by_one_replica_is_served_by_the_other() {
    let Some(backend) = Backend::require_postgres_s3("a_patch_computed_by_one_replica_is_served_by_the_other") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let location = backend.fresh(&dir.path().join("shared"));
    let mut token_args = vec!["tokens".to_owned(), "create".to_owned()];
    token_args.extend(location.token_args());
    let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
    let token = aloft_ok(&token_args).trim().to_owned();
    // A computes patches; B only serves them.
    let a = Server::start_on(&dir.path().join("a"), "127.0.0.1:0", location.serve_args());
    let mut b_args = location.serve_args();
    b_args.extend(["--patch-workers".to_owned(), "0".to_owned()]);
    let b = Server::start_on(&dir.path().join("b"), "127.0.0.1:0", b_args);
    aloft_ok(&["apps", "create", "demo", "--server", &a.base, "--token", &token]);
    // Published through B, which computes nothing.
    let (on_u1, to_u2) = publish_patched_pair(&b, &token, dir.path());
    let (url, hash, _) = manifest(&b, "ios").await;
    assert!(url.starts_with(&b.base));
    let reply = get(&url, &asset_headers("ios", &on_u1, &to_u2, true)).await;
    assert_eq!(sha256_b64url(&applied(&reply, &on_u1, &bundle("ios", "one"))), hash);
    drop(a);
}

/// Asset downloads on a fresh connection are answered by the wire lane straight off the socket;
/// a percent-encoded name takes hyper and the router. Every kind of asset answer must be the
/// same bytes either way: patches, encodings, ranges, revalidation, `HEAD`, errors, and a bundle
/// too large for the memory cache, which the wire lane streams from storage.
#[tokio::test]
async fn the_wire_lane_and_hyper_answer_assets_alike() {
    // A cache of 100 KB keeps blobs of up to 25 KB: the patch and the image, not the bundles.
    assets_alike_on_both_lanes(Some("100000")).await;
}

/// The same with the default memory cache, which holds the bundles: on local disk, the wire
/// lane sends a cached representation of 32 KiB or more from its file (`sendfile`), behind the
/// heads of the answers pipelined before it.
#[tokio::test]
async fn the_wire_lane_sends_cached_bundles_from_their_files() {
    assets_alike_on_both_lanes(None).await;
}

async fn assets_alike_on_both_lanes(cache_bytes: Option<&str>) {
    let Setup { dir, server, token } = Setup::new();
    let server = match cache_bytes {
        Some(bytes) => {
            let listen = server.base.trim_start_matches("http://").to_owned();
            let (data, mut args) = (server.data_dir.clone(), server.backend_args.clone());
            server.kill();
            args.extend(["--asset-cache-bytes".to_owned(), bytes.to_owned()]);
            Server::start_on(&data, &listen, args)
        }
        None => server,
    };
    let (on_u1, to_u2) = publish_patched_pair(&server, &token, dir.path());
    let (url, hash, png_url) = manifest(&server, "ios").await;
    let bundle_path = url.strip_prefix(&server.base).unwrap().to_owned();
    let png_path = png_url.strip_prefix(&server.base).unwrap().to_owned();
    let lines = |h: Vec<(String, String)>| -> String { h.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect() };
    let asks = lines(asset_headers("ios", &on_u1, &to_u2, true));
    let full = lines(asset_headers("ios", &on_u1, &to_u2, false));
    let plain = lines(vec![("Accept".into(), "*/*".into())]);
    let unknown_base = lines(asset_headers("ios", &uuid::Uuid::new_v4().to_string(), &to_u2, true));
    let missing = format!("/assets/{}.png", sha256_b64url(b"never stored"));
    let cases: Vec<(&str, &str, String, String, &str)> = vec![
        ("patch", "GET", bundle_path.clone(), asks.clone(), "226"),
        ("patch, HEAD", "HEAD", bundle_path.clone(), asks, "226"),
        ("full bundle", "GET", bundle_path.clone(), full.clone(), "200"),
        ("full bundle, HEAD", "HEAD", bundle_path.clone(), full, "200"),
        ("identity", "GET", bundle_path.clone(), plain.clone(), "200"),
        ("unknown base", "GET", bundle_path.clone(), unknown_base, "200"),
        (
            "range",
            "GET",
            bundle_path.clone(),
            format!("{plain}Range: bytes=10-99\r\n"),
            "206",
        ),
        (
            "range past the end",
            "GET",
            bundle_path.clone(),
            format!("{plain}Range: bytes=999999-\r\n"),
            "416",
        ),
        (
            "revalidated",
            "GET",
            bundle_path.clone(),
            format!("{plain}If-None-Match: \"{hash}\"\r\n"),
            "304",
        ),
        (
            "image",
            "GET",
            png_path.clone(),
            format!("{plain}Accept-Encoding: gzip\r\n"),
            "200",
        ),
        ("image, HEAD", "HEAD", png_path.clone(), plain.clone(), "200"),
        ("unknown asset", "GET", missing.clone(), plain.clone(), "404"),
        ("unknown asset, HEAD", "HEAD", missing.clone(), plain.clone(), "404"),
        ("bad name", "GET", "/assets/abc.png".into(), plain.clone(), "400"),
    ];
    let base = server.base.clone();
    let bundle_len = bundle("ios", "two").len();
    let bundle_hash = hash.clone();
    tokio::task::spawn_blocking(move || {
        for (what, method, path, headers, status) in cases {
            let file = path.strip_prefix("/assets/").unwrap();
            let encoded = format!("/assets/%{:02X}{}", file.as_bytes()[0], &file[1..]);
            let ask = |path: &str| {
                let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
                String::from_utf8_lossy(&raw_exchange_bytes(&base, request.as_bytes(), 1)).into_owned()
            };
            let (wire, hyper) = (ask(&path), ask(&encoded));
            assert!(wire.starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {wire:.600}");
            assert_eq!(without_date(&wire), without_date(&hyper), "{what}");
        }

        // The bundle (streamed, or sent from its file) arrives whole, and pipelined answers keep
        // their order: an image, the bundle, the image again, then a request only hyper answers.
        let image = format!("GET {png_path} HTTP/1.1\r\nHost: t\r\n{plain}\r\n");
        let streamed = format!("GET {bundle_path} HTTP/1.1\r\nHost: t\r\n{plain}\r\n");
        let request = format!("{image}{streamed}{image}GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        let got = raw_exchange_bytes(&base, request.as_bytes(), 4);
        let heads: Vec<usize> = (0..got.len().saturating_sub(8))
            .filter(|&i| got[i..].starts_with(b"HTTP/1.1 200 OK\r\n"))
            .collect();
        assert_eq!(
            heads.len(),
            4,
            "{}",
            String::from_utf8_lossy(&got[..got.len().min(2000)])
        );
        let body_of = |at: usize, until: usize| {
            let head_end = at + got[at..].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            &got[head_end..until]
        };
        assert_eq!(body_of(heads[1], heads[2]).len(), bundle_len);
        assert_eq!(sha256_b64url(body_of(heads[1], heads[2])), hash);
        assert_eq!(body_of(heads[0], heads[1]), body_of(heads[2], heads[3]));
        assert_eq!(body_of(heads[3], got.len()), b"ok\n");
    })
    .await
    .unwrap();

    // On local disk with the default cache, the bundle was sent from its file, which the
    // server keeps open for the next download.
    let on_local_disk = !server.backend_args.iter().any(|a| a == "--storage");
    if cache_bytes.is_none() && on_local_disk && cfg!(target_os = "linux") {
        let blobs = std::fs::canonicalize(server.data_dir.join("blobs")).unwrap();
        let open: Vec<PathBuf> = open_files(server.child.id())
            .into_iter()
            .filter(|target| target.starts_with(&blobs))
            .collect();
        use base64::Engine as _;
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&bundle_hash)
            .unwrap();
        let bundle_hex = hex::encode(digest);
        assert!(
            open.iter().any(|p| p.to_string_lossy().ends_with(&bundle_hex)),
            "the bundle's file is held open: {open:?}"
        );
    }
}
