use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::output::{self, errln};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate an RSA-2048 key pair and a self-signed code-signing certificate, as
    /// `npx expo-updates codesigning:generate` does, and print the app.json fragment.
    Generate {
        /// Folder for private-key.pem, public-key.pem and certificate.pem (created if missing;
        /// existing files are never overwritten).
        #[arg(long)]
        output_dir: PathBuf,
        /// Common name of the certificate subject.
        #[arg(long)]
        common_name: String,
        #[arg(long, default_value_t = 10)]
        validity_years: u32,
        /// Key id to put in the printed `codeSigningMetadata`.
        #[arg(long, default_value = "main")]
        keyid: String,
    },
}

fn write_new(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate {
            output_dir,
            common_name,
            validity_years,
            keyid,
        } => {
            if validity_years == 0 {
                bail!("--validity-years must be at least 1");
            }
            if common_name.trim().is_empty() {
                bail!("--common-name must not be empty");
            }
            std::fs::create_dir_all(&output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
            for name in ["private-key.pem", "public-key.pem", "certificate.pem"] {
                if output_dir.join(name).exists() {
                    bail!(
                        "{} already exists; choose an empty --output-dir",
                        output_dir.join(name).display()
                    );
                }
            }
            let keys = aloft_core::keys::generate(&common_name, validity_years)?;
            write_new(&output_dir.join("private-key.pem"), &keys.private_key_pem, true)?;
            write_new(&output_dir.join("public-key.pem"), &keys.public_key_pem, false)?;
            write_new(&output_dir.join("certificate.pem"), &keys.certificate_pem, false)?;
            let cert_path = if output_dir.is_absolute() {
                output_dir.join("certificate.pem").display().to_string()
            } else {
                format!(
                    "./{}/certificate.pem",
                    output_dir.display().to_string().trim_start_matches("./")
                )
            };
            errln!(
                "wrote private-key.pem, public-key.pem and certificate.pem to {}",
                output_dir.display()
            );
            errln!("keep private-key.pem secret; add this to app.json:");
            let fragment = serde_json::json!({
                "expo": { "updates": {
                    "codeSigningCertificate": cert_path,
                    "codeSigningMetadata": { "keyid": keyid, "alg": aloft_core::signature::ALG }
                }}
            });
            output::json(&fragment)?;
        }
    }
    Ok(())
}
