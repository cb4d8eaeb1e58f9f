//! `aloft embedded`: register a store build's embedded bundle, so the first updates devices on
//! that build take can be small patches from it (docs/patches.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use aloft_core::api::{AddEmbedded, EmbeddedInfo, MissingBlobsRequest, MissingBlobsResponse};
use aloft_core::embedded::{self, PackageKind};
use aloft_core::{ContentHash, Platform};
use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use uuid::Uuid;

use crate::client::Client;
use crate::output::{self, outln};
use crate::release::AppArgs;

#[derive(Subcommand)]
pub enum EmbeddedCommand {
    /// Register the embedded bundle of a store build: a built .apk, .aab or .ipa (the embedded
    /// update id and the bundle are read from it; an iOS build also names its runtime version,
    /// an Android one needs --runtime-version), or the bundle `npx expo export:embed` wrote,
    /// with --update-id, --runtime-version and --platform.
    Add {
        /// The .apk, .aab or .ipa, or the exported bundle file.
        path: PathBuf,
        /// The embedded update id (`id` in the build's app.manifest); for an exported bundle.
        #[arg(long)]
        update_id: Option<Uuid>,
        /// The build's runtime version: for an exported bundle and Android packages; for an
        /// .ipa, instead of the one its Expo.plist names.
        #[arg(long)]
        runtime_version: Option<String>,
        /// ios or android; for an exported bundle.
        #[arg(long)]
        platform: Option<Platform>,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the embedded bundles registered for an app.
    List {
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove an embedded bundle (and the patches from it).
    Remove {
        /// The embedded update id.
        id: String,
        #[command(flatten)]
        app: AppArgs,
    },
}

/// What a build says about its embedded update.
struct Found {
    id: Uuid,
    platform: Platform,
    runtime_version: String,
    bundle: Vec<u8>,
}

pub async fn run(cmd: EmbeddedCommand) -> anyhow::Result<()> {
    match cmd {
        EmbeddedCommand::Add {
            path,
            update_id,
            runtime_version,
            platform,
            app,
            json,
        } => {
            let found = match PackageKind::of_file_name(&path.to_string_lossy()) {
                Some(kind) => {
                    if update_id.is_some() || platform.is_some() {
                        bail!(
                            "{} is a built package: its update id and platform are read from it; \
                             --update-id and --platform are for a bundle from `npx expo export:embed`",
                            path.display()
                        );
                    }
                    read_package(&path, kind, runtime_version)?
                }
                None => exported(&path, update_id, runtime_version, platform)?,
            };
            let client = app.client()?;
            let bundle = upload(&client, found.bundle).await?;
            let body = AddEmbedded {
                id: found.id,
                platform: found.platform,
                runtime_version: found.runtime_version,
                bundle,
            };
            let added: EmbeddedInfo = client.post(&app.path("/embedded"), &body).await?;
            if json {
                output::json(&added)?;
            } else {
                outln!(
                    "registered embedded update {} ({} {}, bundle of {} bytes): the app's updates of this \
                     platform and runtime version get patches from it",
                    added.id,
                    added.platform.as_str(),
                    added.runtime_version,
                    added.size
                )?;
            }
        }
        EmbeddedCommand::List { app, json } => {
            let list: Vec<EmbeddedInfo> = app.client()?.get(&app.path("/embedded")).await?;
            if json {
                output::json(&list)?;
            } else {
                outln!(
                    "{:<36} {:<8} {:<16} {:>10} REGISTERED",
                    "EMBEDDED UPDATE",
                    "PLATFORM",
                    "RUNTIME",
                    "BYTES"
                )?;
                for e in list {
                    outln!(
                        "{:<36} {:<8} {:<16} {:>10} {}",
                        e.id,
                        e.platform.as_str(),
                        e.runtime_version,
                        e.size,
                        e.created_at
                    )?;
                }
            }
        }
        EmbeddedCommand::Remove { id, app } => {
            let client = app.client()?;
            client
                .send_empty(client.request(Method::DELETE, &app.path(&format!("/embedded/{id}"))))
                .await?;
            outln!("embedded update {id} removed")?;
        }
    }
    Ok(())
}

/// A bundle from `npx expo export:embed`: everything else comes from the flags.
fn exported(
    path: &Path,
    update_id: Option<Uuid>,
    runtime_version: Option<String>,
    platform: Option<Platform>,
) -> anyhow::Result<Found> {
    let (Some(id), Some(runtime_version), Some(platform)) = (update_id, runtime_version, platform) else {
        bail!(
            "{} is not an .apk, .aab or .ipa; for a bundle from `npx expo export:embed`, give --update-id (the \
             `id` of the app.manifest written beside it), --runtime-version and --platform",
            path.display()
        );
    };
    let bundle = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Found {
        id,
        platform,
        runtime_version,
        bundle,
    })
}

/// Reads the embedded manifest, the bundle and (iOS) the runtime version from a package.
fn read_package(path: &Path, kind: PackageKind, runtime_version: Option<String>) -> anyhow::Result<Found> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(|| {
        format!(
            "{} is not a readable zip archive (an .apk, .aab or .ipa)",
            path.display()
        )
    })?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    let layout = embedded::locate(kind, names.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut read = |name: &str| -> anyhow::Result<Vec<u8>> {
        let mut entry = zip
            .by_name(name)
            .with_context(|| format!("reading {name} in {}", path.display()))?;
        let mut out = Vec::new();
        entry
            .read_to_end(&mut out)
            .with_context(|| format!("reading {name} in {}", path.display()))?;
        Ok(out)
    };
    let id = embedded::update_id(&read(&layout.manifest)?)
        .map_err(|e| anyhow::anyhow!("{}: {}: {e}", path.display(), layout.manifest))?;
    let bundle = read(&layout.bundle)?;
    let runtime_version = match (runtime_version, kind) {
        (Some(rv), _) => rv,
        (None, PackageKind::Ipa) => {
            let plist = match &layout.plist {
                Some(p) => read(p)?,
                None => bail!(
                    "{} has no Expo.plist naming its runtime version; give --runtime-version",
                    path.display()
                ),
            };
            let fingerprint = layout.fingerprint.as_deref().map(&mut read).transpose()?;
            embedded::ios_runtime_version(&plist, fingerprint.as_deref()).with_context(|| {
                format!(
                    "{}: Expo.plist names no EXUpdatesRuntimeVersion (or its fingerprint is missing); give --runtime-version",
                    path.display()
                )
            })?
        }
        (None, _) => bail!(
            "{}: an Android build keeps its runtime version in compiled resources, which are not read; give \
             --runtime-version (the `runtimeVersion` the build was made with)",
            path.display()
        ),
    };
    Ok(Found {
        id,
        platform: kind.platform(),
        runtime_version,
        bundle,
    })
}

/// Uploads the bundle unless the server has it; its hash.
async fn upload(client: &Client, bundle: Vec<u8>) -> anyhow::Result<ContentHash> {
    let hash = ContentHash::of(&bundle);
    let MissingBlobsResponse { missing } = client
        .post("/blobs/missing", &MissingBlobsRequest { hashes: vec![hash] })
        .await?;
    if missing.contains(&hash) {
        let _: serde_json::Value = client
            .send(client.request(Method::PUT, &format!("/blobs/{hash}")).body(bundle))
            .await
            .context("uploading the embedded bundle")?;
    }
    Ok(hash)
}
