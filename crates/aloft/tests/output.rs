//! What the CLI shows, through the real binary: text from a server is printed with its control
//! characters escaped; a stdout closed by its reader ends a command quietly; `publish` shows
//! what `npx expo export` says and refuses, before uploading anything, a publish the server
//! would refuse; every subcommand's `--help` describes that subcommand.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::*;

/// The characters no line of output may carry raw: C0 (but the line break), DEL and C1.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| *c != '\n' && matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'))
        .collect()
}

fn server_args(setup: &Setup) -> Vec<String> {
    vec![
        "--server".into(),
        setup.server.base.clone(),
        "--token".into(),
        setup.token.clone(),
    ]
}

fn run(args: &[String]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run aloft")
}

fn run_ok(args: &[String]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "aloft {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Server text is escaped

#[test]
fn text_from_the_server_is_printed_with_control_characters_escaped() {
    let setup = Setup::new();
    let evil_name = "ci\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m";
    // A token whose name would clear the screen and retitle the terminal.
    let mut args = strings(&["tokens", "create", "--name", evil_name, "--scope", "admin"]);
    args.extend(server_args(&setup));
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evil_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(raw_controls(&stderr).is_empty(), "{stderr:?}");

    // A publish whose message carries an escape sequence and a C1 control, made with that token.
    let export = make_export(setup.dir.path(), "esc", "1.0.0");
    let message = "fix \u{1b}[31mred\u{1b}[0m\u{85}next";
    let mut args = strings(&[
        "publish",
        "--app",
        "demo",
        "--channel",
        "production",
        "--message",
        message,
        "--input",
    ]);
    args.push(export.to_str().unwrap().to_owned());
    args.extend([
        "--server".into(),
        setup.server.base.clone(),
        "--token".into(),
        evil_token,
    ]);
    run_ok(&args);

    let listing = |cmd: &[&str]| {
        let mut args = strings(cmd);
        args.extend(server_args(&setup));
        run_ok(&args)
    };
    let tokens = listing(&["tokens", "list"]);
    assert!(raw_controls(&tokens).is_empty(), "{tokens:?}");
    assert!(tokens.contains(r"ci\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m"), "{tokens}");

    let groups = listing(&["updates", "list", "--app", "demo"]);
    assert!(raw_controls(&groups).is_empty(), "{groups:?}");
    assert!(groups.contains(r"fix \u{1b}[31mred\u{1b}[0m\u{85}next"), "{groups}");
    assert!(
        groups.contains(r"ci\u{1b}[2J"),
        "the publisher's name is shown escaped too: {groups}"
    );

    // JSON output stays JSON that means the same, with the controls written as escapes.
    let json_groups = listing(&["updates", "list", "--app", "demo", "--json"]);
    assert!(raw_controls(&json_groups).is_empty(), "{json_groups:?}");
    let parsed: Value = serde_json::from_str(&json_groups).unwrap();
    assert_eq!(parsed[0]["message"], message);

    let audit = listing(&["audit"]);
    assert!(raw_controls(&audit).is_empty(), "{audit:?}");
    assert!(audit.contains(r"ci\u{1b}[2J"), "{audit}");
    let json_audit = listing(&["audit", "--json"]);
    assert!(raw_controls(&json_audit).is_empty(), "{json_audit:?}");
    let parsed: Value = serde_json::from_str(&json_audit).unwrap();
    assert!(
        parsed
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with(evil_name)),
        "{parsed}"
    );
}

/// A server that answers each of `replies` to one request, in order.
fn fake_server(replies: Vec<(u16, &'static str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (status, content_type, body) in replies {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            let mut stream = stream;
            let head = format!(
                "HTTP/1.1 {status} Refused\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        }
    });
    base
}

#[test]
fn error_messages_from_a_server_are_printed_escaped() {
    let json_body =
        json!({"error": {"code": "bad\u{1b}[5m", "message": "evil \u{1b}[2J\u{1b}]0;title\u{7} \u{9b}31m done"}});
    let html_body = b"<h1>\x1b[2Jproxy error\x07</h1>".to_vec();
    let base = fake_server(vec![
        (409, "application/json", serde_json::to_vec(&json_body).unwrap()),
        // (Not a 502: the CLI retries those, and this server answers once.)
        (400, "text/html", html_body),
    ]);
    for expected in [
        r"evil \u{1b}[2J\u{1b}]0;title\u{7} \u{9b}31m done",
        r"<h1>\u{1b}[2Jproxy error\u{7}</h1>",
    ] {
        let out = run(&strings(&["apps", "list", "--server", &base, "--token", "t"]));
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(raw_controls(&stderr).is_empty(), "{stderr:?}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// A closed stdout

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let setup = Setup::new();
    let published = setup.publish(
        &make_export(setup.dir.path(), "pipe", "1.0.0"),
        "production",
        false,
        &[],
    );
    let group = published["group_id"].as_str().unwrap().to_owned();
    let keys = setup.path("more-keys");
    let app = ["--app", "demo"];
    let commands: Vec<Vec<String>> = vec![
        strings(&["audit"]),
        strings(&["audit", "--json"]),
        strings(&["apps", "list"]),
        strings(&["tokens", "list"]),
        [strings(&["channels", "list"]), strings(&app)].concat(),
        [strings(&["branches", "list"]), strings(&app)].concat(),
        [strings(&["updates", "list"]), strings(&app)].concat(),
        [strings(&["updates", "list", "--json"]), strings(&app)].concat(),
        [strings(&["updates", "show", &group]), strings(&app)].concat(),
        [strings(&["embedded", "list"]), strings(&app)].concat(),
    ];
    let mut problems = Vec::new();
    let mut run_closed = |args: Vec<String>| {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command prints anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success()
            || ["panicked", "Broken pipe", "backtrace", "error"]
                .iter()
                .any(|w| stderr.contains(w))
        {
            problems.push(format!("aloft {args:?}: {} {stderr}", out.status));
        }
    };
    for mut args in commands {
        args.extend(server_args(&setup));
        run_closed(args);
    }
    // Commands that print without asking a server.
    run_closed(strings(&[
        "keys",
        "generate",
        "--output-dir",
        keys.to_str().unwrap(),
        "--common-name",
        "Pipe",
    ]));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// publish runs `npx expo export` in the open

/// A folder with a fake `npx` that prints to both streams and fails, or that plays `expo export`
/// and `expo config` with a prepared export.
fn fake_npx(dir: &Path, export: Option<&Path>) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = match export {
        None => "#!/bin/sh\n\
                 echo \"fake npx stdout: $*\"\n\
                 echo \"fake npx stderr: Error: Cannot find module 'expo/package.json'\" >&2\n\
                 exit 1\n"
            .to_owned(),
        Some(export) => format!(
            "#!/bin/sh\n\
             case \"$1 $2\" in\n\
             'expo export') echo 'Exporting... (fake)'; echo 'Bundled 1 module' >&2; cp -R '{e}/.' \"$4\" ;;\n\
             'expo config') cat '{e}/expoConfig.json' ;;\n\
             *) echo \"unexpected: $*\" >&2; exit 2 ;;\n\
             esac\n",
            e = export.display()
        ),
    };
    let path = bin.join("npx");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn publish_in(setup: &Setup, project: &Path, bin: &Path, extra: &[&str]) -> std::process::Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut args = strings(&["publish", "--app", "demo", "--channel", "production"]);
    args.extend(server_args(setup));
    args.extend(strings(extra));
    Command::new(BIN)
        .args(&args)
        .current_dir(project)
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn publish_without_input_shows_what_npx_expo_export_said() {
    let setup = Setup::new();
    let project = setup.path("project");
    std::fs::create_dir_all(&project).unwrap();
    let bin = fake_npx(setup.dir.path(), None);
    let out = publish_in(&setup, &project, &bin, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in [
        "fake npx stderr: Error: Cannot find module 'expo/package.json'",
        "fake npx stdout: expo export --output-dir",
        "`npx expo export --output-dir",
        "exit code 1",
        &project.canonicalize().unwrap().display().to_string(),
        "npm install",
    ] {
        assert!(stderr.contains(said), "stderr does not show {said:?}:\n{stderr}");
    }
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));

    // When npx works, its output is shown on stderr, and stdout is only the result.
    let export = make_export(setup.dir.path(), "npx", "1.0.0");
    let bin = fake_npx(&setup.path("working"), Some(&export));
    let out = publish_in(&setup, &project, &bin, &["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Exporting... (fake)") && stderr.contains("Bundled 1 module"),
        "{stderr}"
    );
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(published["branch"], "production");
}

// ---------------------------------------------------------------------------------------------
// Refused publishes upload nothing

/// The SHA-256 of every file of an export but its metadata and config.
fn export_hashes(dist: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dist.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("metadata.json" | "expoConfig.json")
            ) {
                let mut bytes = Vec::new();
                std::fs::File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
                out.push(sha256_b64url(&bytes));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Which of `hashes` the server lacks, asked the way `aloft publish` asks.
async fn missing(setup: &Setup, hashes: &[String]) -> Vec<String> {
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/blobs/missing", setup.server.base))
        .bearer_auth(&setup.token)
        .json(&json!({ "hashes": hashes }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut missing: Vec<String> = reply["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    missing.sort();
    missing
}

#[tokio::test]
async fn refused_publishes_upload_nothing() {
    let setup = Setup::new();
    let base = setup.server.base.clone();

    // To an app that does not exist.
    let export = make_export(setup.dir.path(), "no-app", "1.0.0");
    let hashes = export_hashes(&export);
    assert!(hashes.len() >= 4, "{hashes:?}");
    let mut args = strings(&["publish", "--app", "nope", "--channel", "production", "--input"]);
    args.push(export.to_str().unwrap().to_owned());
    args.extend(server_args(&setup));
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no app \"nope\"") && stderr.contains("`aloft apps create nope`") && stderr.contains(&base),
        "{stderr}"
    );
    assert_eq!(
        missing(&setup, &hashes).await,
        hashes,
        "files were uploaded for an unknown app"
    );

    // Onto a branch with a group rollout in progress.
    setup.publish(
        &make_export(setup.dir.path(), "rolling", "1.0.0"),
        "production",
        false,
        &["--rollout-percentage", "10"],
    );
    let export = make_export(setup.dir.path(), "blocked", "1.0.0");
    let hashes = export_hashes(&export);
    let mut args = strings(&["publish", "--app", "demo", "--channel", "production", "--input"]);
    args.push(export.to_str().unwrap().to_owned());
    args.extend(server_args(&setup));
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rollout_in_progress") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        missing(&setup, &hashes).await,
        hashes,
        "files were uploaded for a refused publish"
    );

    // Forced, the same publish goes through.
    args.push("--force".into());
    run_ok(&args);
    assert!(missing(&setup, &hashes).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// --help

/// The subcommands `aloft <path> --help` lists, with their one-line descriptions.
fn subcommands(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(char::is_whitespace)?;
            Some((name.to_owned(), about.trim().to_owned()))
        })
        .filter(|(name, _)| name != "help")
        .collect()
}

#[test]
fn every_subcommand_help_describes_that_subcommand() {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let help = aloft_ok(&[path.iter().map(String::as_str).collect::<Vec<_>>(), vec!["--help"]].concat());
        for (name, about) in subcommands(&help) {
            let mut child = path.clone();
            child.push(name);
            let own = aloft_ok(&[child.iter().map(String::as_str).collect::<Vec<_>>(), vec!["--help"]].concat());
            let first = own.lines().next().unwrap_or_default().trim().to_owned();
            // The parent's list shows the start of the same description.
            let about = about.trim_end_matches("...").trim_end_matches('.');
            assert!(
                first.starts_with(about) || about.starts_with(first.trim_end_matches('.')),
                "aloft {}: listed as {about:?}, but --help starts with {first:?}",
                child.join(" ")
            );
            seen.push((child.join(" "), first));
            todo.push(child);
        }
    }
    assert!(seen.len() >= 30, "only {} subcommands found: {seen:?}", seen.len());
    let mut problems = Vec::new();
    for (i, (cmd, first)) in seen.iter().enumerate() {
        if first.len() < 12 {
            problems.push(format!("aloft {cmd}: first line {first:?} says too little"));
        }
        for (other, other_first) in &seen[..i] {
            if first == other_first {
                problems.push(format!("aloft {cmd} and aloft {other} share the first line {first:?}"));
            }
        }
        // The shared argument groups must not speak for a subcommand.
        for shared in [
            "Server, token and app",
            "Where the server is",
            "--signing-key`/`--keyid`",
        ] {
            if first.contains(shared) {
                problems.push(format!(
                    "aloft {cmd}: first line is a shared argument group's: {first:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
