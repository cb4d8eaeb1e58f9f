//! Shared pieces of the end-to-end tests: the real `aloft` binary started on a loopback port,
//! synthetic exports, device requests as docs/protocol.md §1 describes them, and independent checks
//! (Python's `email` package parses multipart bodies; the `openssl` command verifies signatures).

#![allow(dead_code, clippy::unwrap_used)]

pub mod browser;
pub mod fleet;
pub mod receiver;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use aloft_store::testing::Backend;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use md5::Digest as _;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_aloft");

pub fn aloft(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run aloft")
}

/// Runs aloft and insists on success; returns stdout.
pub fn aloft_ok(args: &[&str]) -> String {
    let out = aloft(args);
    assert!(
        out.status.success(),
        "aloft {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A running `aloft serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    /// Backend flags (database URL, storage) it was started with.
    pub backend_args: Vec<String>,
}

impl Server {
    /// A server on a fresh location of the backend under test.
    pub fn start(data_dir: &Path) -> Self {
        let location = Backend::from_env().fresh(data_dir);
        Self::start_on(data_dir, "127.0.0.1:0", location.serve_args())
    }

    /// A server with these backend flags (to share a database and bucket with another one).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", extra.iter().map(|s| s.to_string()).collect())
    }

    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::start_on(data_dir, listen, extra.iter().map(|s| s.to_string()).collect())
    }

    /// Kills the server (SIGKILL) and starts it again on the same address and data folder, so
    /// URLs in earlier manifests stay valid.
    pub fn crash_and_restart(self) -> Self {
        let listen = self.base.trim_start_matches("http://").to_owned();
        let data_dir = self.data_dir.clone();
        let backend_args = self.backend_args.clone();
        self.kill();
        Self::start_on(&data_dir, &listen, backend_args)
    }

    pub fn start_on(data_dir: &Path, listen: &str, backend_args: Vec<String>) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(&backend_args)
            .env("ALOFT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn aloft serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            base,
            data_dir: data_dir.to_owned(),
            backend_args,
        }
    }

    pub fn manifest_url(&self, slug: &str) -> String {
        format!("{}/apps/{slug}/manifest", self.base)
    }

    /// SIGKILL: no graceful anything, as a crash would be.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys from `aloft keys generate`, a fresh data folder with a token, and a running server with
/// an app `demo`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub token: String,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        aloft_ok(&[
            "keys",
            "generate",
            "--output-dir",
            keys.to_str().unwrap(),
            "--common-name",
            "Aloft E2E",
        ]);
        let data = dir.path().join("data");
        let location = Backend::from_env().fresh(&data);
        let mut token_args = vec!["tokens".to_owned(), "create".to_owned()];
        token_args.extend(location.token_args());
        let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
        let token = aloft_ok(&token_args).trim().to_owned();
        let server = Server::start_on(&data, "127.0.0.1:0", location.serve_args());
        let out = aloft_ok(&["apps", "create", "demo", "--server", &server.base, "--token", &token]);
        assert!(
            out.contains(&server.manifest_url("demo")),
            "apps create printed {out:?}"
        );
        Self { dir, server, token }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn key(&self) -> String {
        self.path("keys/private-key.pem").to_string_lossy().into_owned()
    }

    pub fn certificate(&self) -> PathBuf {
        self.path("keys/certificate.pem")
    }

    /// `aloft publish ... --json`, signed with the generated key unless `unsigned`.
    pub fn publish(&self, export: &Path, channel: &str, signed: bool, extra: &[&str]) -> Value {
        let mut args = publish_args(&self.server.base, &self.token, channel, export);
        args.push("--json");
        let key = self.key();
        if signed {
            args.extend(["--signing-key", &key, "--keyid", "main"]);
        }
        args.extend(extra);
        serde_json::from_str(&aloft_ok(&args)).expect("publish --json output")
    }
}

/// `aloft publish` of an export to a channel of the app `demo`.
pub fn publish_args<'a>(base: &'a str, token: &'a str, channel: &'a str, export: &'a Path) -> Vec<&'a str> {
    vec![
        "publish",
        "--server",
        base,
        "--token",
        token,
        "--app",
        "demo",
        "--channel",
        channel,
        "--input",
        export.to_str().unwrap(),
    ]
}

/// `aloft publish --json` of an export to `demo`'s production channel, unsigned: its output.
pub fn publish_json(base: &str, token: &str, export: &Path) -> Value {
    let mut args = publish_args(base, token, "production", export);
    args.push("--json");
    serde_json::from_str(&aloft_ok(&args)).expect("publish --json output")
}

/// The id of the update for `platform` in `aloft publish --json` output.
pub fn update_id(published: &Value, platform: &str) -> String {
    published["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["platform"] == platform)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The id of the iOS update in `aloft publish --json` output.
pub fn ios_id(published: &Value) -> String {
    update_id(published, "ios")
}

pub fn sha256_b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(md5::Md5::digest(bytes))
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// A synthetic `expo export` folder: Hermes-looking bundles per platform, a PNG and a font
/// shared by both, `metadata.json` and `expoConfig.json`. `tag` makes the bytes unique.
pub fn make_export(dir: &Path, tag: &str, runtime_version: &str) -> PathBuf {
    let dist = dir.join(format!("dist-{tag}"));
    let mut fm = serde_json::Map::new();
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &bytes_of(&format!("{tag}-png"), 3000)].concat();
    let font = [
        b"\x00\x01\x00\x00".as_slice(),
        "glyphs ".repeat(500).as_bytes(),
        tag.as_bytes(),
    ]
    .concat();
    let mut assets = Vec::new();
    for (bytes, ext) in [(&png, "png"), (&font, "ttf")] {
        let name = md5_hex(bytes);
        write(&dist.join("assets").join(&name), bytes);
        assets.push(json!({"path": format!("assets/{name}"), "ext": ext}));
    }
    for platform in ["ios", "android"] {
        // Hermes magic, then compressible text so the brotli variant is worth keeping.
        let body = [
            b"\xc6\x1f\xbc\x03\xc1\x03\x19\x1f".as_slice(),
            format!("// {tag} {platform}\n").as_bytes(),
            "function render(){return 'hello world';}\n".repeat(2000).as_bytes(),
        ]
        .concat();
        let path = format!(
            "_expo/static/js/{platform}/index-{}.hbc",
            &md5_hex(tag.as_bytes())[..12]
        );
        write(&dist.join(&path), &body);
        fm.insert(platform.into(), json!({"bundle": path, "assets": assets}));
    }
    write(
        &dist.join("metadata.json"),
        json!({"version": 0, "bundler": "metro", "fileMetadata": fm})
            .to_string()
            .as_bytes(),
    );
    let config = json!({"name": "demo", "slug": "demo", "version": "1.0.0", "runtimeVersion": runtime_version,
                        "sdkVersion": "57.0.0", "platforms": ["ios", "android"]});
    write(
        &dist.join("expoConfig.json"),
        serde_json::to_string_pretty(&config).unwrap().as_bytes(),
    );
    dist
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Headers the real client sends with a manifest request (docs/protocol.md §1.1). iOS sends its
/// EAS-Client-ID upper-case, Android lower-case.
pub fn device_headers(platform: &str, runtime_version: &str, channel: &str) -> Vec<(String, String)> {
    let client_id = if platform == "ios" {
        "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D".to_owned()
    } else {
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".to_owned()
    };
    [
        ("Accept", "multipart/mixed,application/expo+json,application/json"),
        ("Expo-Platform", platform),
        ("Expo-Protocol-Version", "1"),
        ("Expo-Runtime-Version", runtime_version),
        ("Expo-API-Version", "1"),
        ("Expo-Updates-Environment", "BARE"),
        ("Expo-JSON-Error", "true"),
        ("EAS-Client-ID", &client_id),
        ("Expo-Embedded-Update-ID", "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b"),
        ("expo-channel-name", channel),
        ("expo-expect-signature", r#"sig, keyid="main", alg="rsa-v1_5-sha256""#),
        ("Accept-Encoding", "zstd, br, gzip"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn get(url: &str, headers: &[(String, String)]) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Reply { status, headers, body }
}

pub fn with(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
    headers
}

pub fn without(mut headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers
}

/// One part of a multipart body as Python's `email` package sees it.
#[derive(Debug)]
pub struct ParsedPart {
    pub name: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ParsedPart {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const PY_MULTIPART: &str = r#"
import base64, email, email.policy, json, sys
content_type = sys.argv[1]
body = sys.stdin.buffer.read()
msg = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP)
if not msg.is_multipart():
    sys.exit("not multipart")
if msg.defects:
    sys.exit("defects: %r" % msg.defects)
parts = []
for part in msg.iter_parts():
    if part.defects:
        sys.exit("part defects: %r" % part.defects)
    parts.append({
        "name": part.get_param("name", header="content-disposition"),
        "headers": [[k, str(v)] for k, v in part.items()],
        "body": base64.b64encode(part.get_payload(decode=True)).decode(),
    })
print(json.dumps(parts))
"#;

/// Checks a multipart body's framing as strictly as the stricter of the native clients reads it
/// (OkHttp's `MultipartReader`, iOS's `UpdatesMultipartStreamReader`; docs/protocol.md §2.2): a
/// `boundary` parameter; CRLF line ends; at least one part; every part with a
/// `content-disposition` carrying a quoted `name`; header names spelled as the client looks them
/// up (`expo-signature` exactly); and the close delimiter followed by its CRLF.
pub fn check_multipart_framing(content_type: &str, body: &[u8]) {
    let (kind, params) = content_type
        .split_once(';')
        .expect("multipart content-type has parameters");
    assert!(kind.trim().eq_ignore_ascii_case("multipart/mixed"), "{content_type}");
    let boundary = params
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .unwrap_or_else(|| panic!("no boundary in {content_type:?}"))
        .trim_matches('"');
    assert!(!boundary.is_empty() && boundary.len() <= 70, "boundary {boundary:?}");
    let open = format!("--{boundary}\r\n");
    let next = format!("\r\n--{boundary}");
    assert!(
        body.starts_with(open.as_bytes()),
        "the body does not start with the first delimiter"
    );
    let close = format!("\r\n--{boundary}--\r\n");
    assert!(
        body.ends_with(close.as_bytes()),
        "the body does not end with the close delimiter and its CRLF: {:?}",
        String::from_utf8_lossy(&body[body.len().saturating_sub(80)..])
    );
    let mut rest = &body[open.len()..];
    let mut parts = 0;
    loop {
        let end = rest
            .windows(next.len())
            .position(|w| w == next.as_bytes())
            .expect("a part without a following delimiter");
        let part = &rest[..end];
        parts += 1;
        let split = part
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a part without the blank line after its headers");
        let head = std::str::from_utf8(&part[..split]).expect("part headers are text");
        let mut name = None;
        for line in head.split("\r\n") {
            let (k, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed part header {line:?}"));
            assert!(!line.contains('\n') && !line.contains('\r'), "bare LF in part headers");
            if k.eq_ignore_ascii_case("expo-signature") {
                assert_eq!(
                    k, "expo-signature",
                    "the client looks the signature up by this exact name"
                );
            }
            if k.eq_ignore_ascii_case("content-disposition") {
                name = v
                    .split(';')
                    .filter_map(|p| p.trim().strip_prefix("name="))
                    .next()
                    .map(|n| {
                        assert!(
                            n.len() >= 2 && n.starts_with('"') && n.ends_with('"'),
                            "unquoted name {n:?}"
                        );
                        n.trim_matches('"').to_owned()
                    });
            }
        }
        let name = name.unwrap_or_else(|| panic!("a part without a content-disposition name: {head:?}"));
        assert!(
            ["manifest", "directive", "extensions", "certificate_chain"].contains(&name.as_str()),
            "unknown part name {name:?}"
        );
        rest = &rest[end + next.len()..];
        if rest == b"--\r\n" {
            break;
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .expect("a delimiter not followed by CRLF or --");
    }
    assert!(parts >= 1, "a multipart answer with no part");
}

/// Parses a multipart body with Python's standard library, not with anything written here,
/// after checking its framing as strictly as the native clients do.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<ParsedPart> {
    check_multipart_framing(content_type, body);
    let mut child = Command::new("python3")
        .args(["-c", PY_MULTIPART, content_type])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the independent multipart parser");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python multipart parse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parts
        .into_iter()
        .map(|p| ParsedPart {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            headers: p["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().to_owned(), h[1].as_str().unwrap().to_owned()))
                .collect(),
            body: STANDARD.decode(p["body"].as_str().unwrap()).unwrap(),
        })
        .collect()
}

/// Parses `sig="…", keyid="…", alg="…"` strictly as a dictionary of sf-strings.
pub fn parse_signature_header(value: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for member in value.split(", ") {
        let (k, v) = member
            .split_once('=')
            .unwrap_or_else(|| panic!("member {member:?} is not key=value"));
        assert!(
            v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
            "member {k} is not an sf-string: {v}"
        );
        out.insert(k.to_owned(), v[1..v.len() - 1].to_owned());
    }
    out
}

/// Verifies an RSA PKCS#1 v1.5 SHA-256 signature with the `openssl` command line and the public
/// key of `certificate`.
pub fn openssl_verify(certificate: &Path, message: &[u8], sig_b64: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let pubkey = dir.path().join("pub.pem");
    let out = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(certificate)
        .output()
        .expect("the openssl command is needed for independent signature checks");
    assert!(out.status.success(), "openssl x509 failed");
    std::fs::write(&pubkey, &out.stdout).unwrap();
    std::fs::write(dir.path().join("msg"), message).unwrap();
    std::fs::write(
        dir.path().join("sig"),
        STANDARD.decode(sig_b64).expect("standard base64 signature"),
    )
    .unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("msg"))
        .output()
        .unwrap()
        .status
        .success()
}

/// Removes a `content-encoding` the way a client would.
pub fn decode_body(reply: &Reply) -> Vec<u8> {
    match reply.header("content-encoding") {
        None => reply.body.clone(),
        Some("br") => {
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut &reply.body[..], &mut out).expect("valid brotli");
            out
        }
        Some("gzip") => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&reply.body[..]), &mut out)
                .expect("valid gzip");
            out
        }
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
}

/// Sends raw bytes on one connection and reads until at least `answers` status lines arrived and
/// the peer then stayed quiet for 300 ms (or closed); returns everything read.
pub fn raw_exchange_bytes(base: &str, request: &[u8], answers: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    stream.write_all(request).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let status_lines = |got: &[u8]| got.windows(7).filter(|w| w == b"HTTP/1.").count();
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) if status_lines(&got) >= answers => break,
            Err(_) => {}
        }
    }
    got
}

/// The files a process holds open: the targets of `/proc/PID/fd` (Linux).
pub fn open_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .collect()
}

/// [`raw_exchange_bytes`] as text (invalid UTF-8 replaced).
pub fn raw_exchange(base: &str, request: &[u8], answers: usize) -> String {
    String::from_utf8_lossy(&raw_exchange_bytes(base, request, answers)).into_owned()
}

/// A raw response without its `date` line (it differs between two answers).
pub fn without_date(reply: &str) -> String {
    reply
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}
