//! The binary's own behaviour: key generation, configuration errors, graceful shutdown.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use support::*;

#[test]
fn keys_generate_writes_the_expo_trio_and_prints_the_app_config() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("keys");
    let out = aloft_ok(&[
        "keys",
        "generate",
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--common-name",
        "OTA Test",
        "--validity-years",
        "3",
    ]);
    let fragment: Value = serde_json::from_str(&out).unwrap();
    let updates = &fragment["expo"]["updates"];
    assert!(
        updates["codeSigningCertificate"]
            .as_str()
            .unwrap()
            .ends_with("keys/certificate.pem")
    );
    assert_eq!(updates["codeSigningMetadata"]["keyid"], "main");
    assert_eq!(updates["codeSigningMetadata"]["alg"], "rsa-v1_5-sha256");

    let private = std::fs::read_to_string(out_dir.join("private-key.pem")).unwrap();
    assert!(
        private.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1 like expo-updates writes"
    );
    let mode = std::fs::metadata(out_dir.join("private-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // openssl reads all three, and agrees on what the certificate says.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(out_dir.join("certificate.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("Subject: CN = OTA Test"), "{text}");
    assert!(text.contains("Issuer: CN = OTA Test"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("Exponent: 65537"), "{text}");
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Digital Signature\n"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Extended Key Usage: critical\n                Code Signing\n"),
        "{text}"
    );
    let rsa = Command::new("openssl")
        .args(["rsa", "-check", "-noout", "-in"])
        .arg(out_dir.join("private-key.pem"))
        .output()
        .unwrap();
    assert!(rsa.status.success(), "{}", String::from_utf8_lossy(&rsa.stderr));
    let cert_pub = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(out_dir.join("certificate.pem"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(cert_pub.stdout).unwrap(),
        std::fs::read_to_string(out_dir.join("public-key.pem")).unwrap()
    );

    // Existing keys are never overwritten.
    let again = aloft(&[
        "keys",
        "generate",
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--common-name",
        "X",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("private-key.pem")).unwrap(),
        private
    );
}

#[test]
fn configuration_mistakes_stop_the_server_before_it_binds() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aloft.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ndata_dir = \"x\"\n").unwrap();
    let out = aloft(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `data_dir`") && err.contains("aloft.toml"),
        "{err}"
    );

    let out = aloft(&[
        "serve",
        "--public-url",
        "ota.example.com",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public-url must start with http"));

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ndata-dir = \"/srv/aloft\"\n").unwrap();
    let out = aloft_ok(&["serve", "--config", config.to_str().unwrap(), "--check-config"]);
    assert!(out.contains("/srv/aloft"), "{out}");
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    assert!(dir.path().join("data").is_dir(), "data folder made on first start");
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    aloft_ok(&["migrate", "--data-dir", data.to_str().unwrap()]);
    let bump = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99999, 'future', 1, x'00', 0)\"); c.commit()",
            data.join("aloft.db").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(bump.success());
    let out = aloft(&["serve", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer than this binary") && err.contains("99999"), "{err}");
}

#[test]
fn one_server_per_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start_at(&dir.path().join("data"), "127.0.0.1:0", &[]);
    let second = aloft(&[
        "serve",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another `aloft serve` is using the data folder"), "{err}");
}
