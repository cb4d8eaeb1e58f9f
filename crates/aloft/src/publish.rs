//! `aloft publish`: read an export, upload the blobs the server lacks, and commit one update
//! group (signed here when `--signing-key` is given; the key never leaves this machine).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use aloft_core::api::{
    AppInfo, FileRef, MissingBlobsRequest, MissingBlobsResponse, PlatformUpdate, PublishCheck, PublishCheckRequest,
    PublishRequest, PublishTarget, PublishedGroup,
};
use aloft_core::export::{self, DistPath, ExportMetadata};
use aloft_core::hash::Hasher;
use aloft_core::{ContentHash, Platform};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use tokio::io::AsyncReadExt;

use crate::client::{Client, ServerArgs, ServerError, SigningArgs};
use crate::output::{self, errln, outln};

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Slug of the app to publish to.
    #[arg(long, env = "ALOFT_APP")]
    app: String,
    /// Channel to publish to; a new channel is created with a branch of the same name.
    #[arg(long, conflicts_with = "branch", required_unless_present = "branch")]
    channel: Option<String>,
    /// Publish straight to a branch instead of a channel.
    #[arg(long)]
    branch: Option<String>,
    /// Output of `npx expo export` (with metadata.json). Without it, `npx expo export` runs in
    /// the current folder.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Public app config JSON [default: <input>/expoConfig.json, or `npx expo config` output].
    #[arg(long)]
    app_config: Option<PathBuf>,
    /// Runtime version, for every platform; otherwise taken from the app config.
    #[arg(long)]
    runtime_version: Option<String>,
    #[arg(long, value_enum, default_value_t = PlatformChoice::All)]
    platform: PlatformChoice,
    /// Message describing the update.
    #[arg(long, default_value = "")]
    message: String,
    #[command(flatten)]
    signing: SigningArgs,
    /// Roll the group out to this share of devices (0-100) instead of all of them.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    rollout_percentage: Option<u8>,
    /// With --rollout-percentage: when the rollout halts by itself.
    #[command(flatten)]
    halt: crate::client::HaltArgs,
    /// Publish even though the branch has a rollout in progress (that rollout is completed).
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum PlatformChoice {
    All,
    Ios,
    Android,
}

struct LocalFile {
    path: PathBuf,
    hash: ContentHash,
    size: u64,
}

/// Resolves a path from metadata.json inside `dist`, refusing anything that escapes it
/// (including through symbolic links).
fn resolve_in(dist_root: &Path, path: &DistPath) -> anyhow::Result<PathBuf> {
    let joined = dist_root.join(path.as_str());
    let real = joined.canonicalize().with_context(|| {
        format!(
            "metadata.json lists {}, which does not exist in {}",
            path.as_str(),
            dist_root.display()
        )
    })?;
    if !real.starts_with(dist_root) {
        bail!(
            "metadata.json lists {}, which resolves outside the export folder {}",
            path.as_str(),
            dist_root.display()
        );
    }
    if !real.is_file() {
        bail!("metadata.json lists {}, which is not a file", path.as_str());
    }
    Ok(real)
}

async fn hash_file(path: &Path) -> anyhow::Result<LocalFile> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let (hash, _md5, size) = hasher.finish();
    Ok(LocalFile {
        path: path.to_owned(),
        hash,
        size,
    })
}

/// Runs `npx expo …` in the current folder with its output shown live: its stderr is ours, its
/// stdout goes to our stderr too (ours may be `--json`) unless `capture` asks for it. A failure
/// says which command failed, where, and what usually fixes it.
async fn run_npx(args: &[&str], capture: bool) -> anyhow::Result<Vec<u8>> {
    use std::process::Stdio;
    let shown = format!("npx {}", args.join(" "));
    let folder = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "the current folder".into());
    let mut child = tokio::process::Command::new("npx")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run `{shown}` in {folder}: is Node.js installed, with `npx` on PATH?"))?;
    let mut stdout = child.stdout.take().context("reading the output of npx")?;
    let mut captured = Vec::new();
    if capture {
        stdout
            .read_to_end(&mut captured)
            .await
            .context("reading the output of npx")?;
    } else {
        // Live, as it comes: an export can take minutes. (A closed stderr only hides it.)
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stdout.read(&mut buf).await.context("reading the output of npx")?;
            if n == 0 {
                break;
            }
            let mut err = std::io::stderr().lock();
            let _ = std::io::Write::write_all(&mut err, &buf[..n]).and_then(|()| std::io::Write::flush(&mut err));
        }
    }
    let status = child.wait().await.with_context(|| format!("waiting for `{shown}`"))?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exit code {code}"),
            None => "a signal".to_owned(),
        };
        bail!(
            "`{shown}` failed ({how}) in {folder}; its messages are above. Run `aloft publish` in your Expo \
             project's folder, with its dependencies installed (run `npm install` if node_modules is missing), \
             or export yourself and pass --input"
        );
    }
    Ok(captured)
}

/// The export folder and the public app config, exporting first when no --input was given.
async fn load_export(args: &PublishArgs) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>, serde_json::Value)> {
    let (dist, tmp) = match &args.input {
        Some(dist) => (dist.clone(), None),
        None => {
            let tmp = tempfile::tempdir().context("creating a folder for the export")?;
            let out = tmp.path().to_string_lossy().into_owned();
            errln!("running `npx expo export` ...");
            run_npx(&["expo", "export", "--output-dir", &out], false).await?;
            (tmp.path().to_owned(), Some(tmp))
        }
    };
    let config_bytes = match (&args.app_config, &args.input) {
        (Some(path), _) => std::fs::read(path).with_context(|| format!("reading app config {}", path.display()))?,
        (None, Some(dist)) => {
            let path = dist.join("expoConfig.json");
            std::fs::read(&path).with_context(|| {
                format!(
                    "reading {}: write it with `npx expo config --type public --json > {}`, or pass --app-config",
                    path.display(),
                    path.display()
                )
            })?
        }
        (None, None) => run_npx(&["expo", "config", "--type", "public", "--json"], true).await?,
    };
    let config: serde_json::Value =
        serde_json::from_slice(&config_bytes).context("the app config is not valid JSON")?;
    if !config.is_object() {
        bail!("the app config must be a JSON object");
    }
    Ok((dist, tmp, config))
}

/// The app must exist before anything is exported or uploaded.
async fn check_app(client: &Client, server: &str, slug: &str) -> anyhow::Result<()> {
    let missing = |e: &anyhow::Error| {
        e.downcast_ref::<ServerError>()
            .is_some_and(|s| s.code == "app_not_found")
    };
    match client.get::<AppInfo>(&format!("/apps/{slug}")).await {
        Ok(_) => Ok(()),
        Err(e) if missing(&e) => bail!(
            "no app {slug:?} on {server} (app_not_found), or none this token may see; \
             create it with `aloft apps create {slug}`"
        ),
        Err(e) => Err(e),
    }
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    if args.halt.any() && args.rollout_percentage.is_none_or(|p| p >= 100) {
        bail!("--halt-on-failure-rate, --halt-min-devices and --no-halt go with --rollout-percentage below 100");
    }
    let client = Client::new(&args.server)?;
    let signing = args.signing.load()?;
    check_app(&client, &args.server.server, &args.app).await?;
    let (dist, _tmp, config) = load_export(&args).await?;
    let dist_root = dist
        .canonicalize()
        .with_context(|| format!("export folder {} does not exist", dist.display()))?;
    let metadata_path = dist_root.join("metadata.json");
    let metadata_bytes = std::fs::read(&metadata_path).with_context(|| {
        format!(
            "reading {}: is this the output folder of `npx expo export`?",
            metadata_path.display()
        )
    })?;
    let metadata = ExportMetadata::parse(&metadata_bytes).with_context(|| format!("in {}", metadata_path.display()))?;
    // expo export nests the public config under no key; app.json-style files have `expo`.
    let expo_client = config.get("expo").cloned().unwrap_or(config);

    let wanted: Vec<Platform> = match args.platform {
        PlatformChoice::All => metadata.platforms.keys().copied().collect(),
        PlatformChoice::Ios => vec![Platform::Ios],
        PlatformChoice::Android => vec![Platform::Android],
    };
    let mut files: HashMap<ContentHash, LocalFile> = HashMap::new();
    let mut updates = Vec::new();
    for platform in wanted {
        let Some(export) = metadata.platforms.get(&platform) else {
            bail!(
                "the export has no {platform} bundle; run `npx expo export --platform {platform}` or choose --platform"
            );
        };
        let runtime_version = match &args.runtime_version {
            Some(rv) => rv.clone(),
            None => export::runtime_version(&expo_client, platform)?.to_string(),
        };
        let bundle = hash_file(&resolve_in(&dist_root, &export.bundle)?).await?;
        let launch_asset = FileRef {
            hash: bundle.hash,
            ext: export.bundle.extension().unwrap_or("bundle").to_owned(),
        };
        files.insert(bundle.hash, bundle);
        let mut assets = Vec::new();
        for asset in &export.assets {
            let file = hash_file(&resolve_in(&dist_root, &asset.path)?).await?;
            assets.push(FileRef {
                hash: file.hash,
                ext: asset.ext.clone(),
            });
            files.insert(file.hash, file);
        }
        updates.push(PlatformUpdate {
            platform,
            runtime_version,
            launch_asset,
            assets,
        });
    }

    // Whatever the publish would be refused for where it goes (a rollout in progress, a bad
    // channel name), it is refused now, before any file is uploaded.
    let check = PublishCheckRequest {
        channel: args.channel.clone(),
        branch: args.branch.clone(),
        updates: updates
            .iter()
            .map(|u| PublishTarget {
                platform: u.platform,
                runtime_version: u.runtime_version.clone(),
            })
            .collect(),
        force: args.force,
    };
    let _: PublishCheck = client
        .post(&format!("/apps/{}/publish/check", args.app), &check)
        .await?;

    upload_missing(&client, &files).await?;

    let request = PublishRequest {
        channel: args.channel.clone(),
        branch: args.branch.clone(),
        message: args.message.clone(),
        updates,
        expo_client: Some(expo_client),
        rollout_percentage: args.rollout_percentage,
        halt_policy: args.halt.policy(),
        no_halt: args.halt.no_halt,
        force: args.force,
        commit: None,
        allow_unsigned: args.signing.allow_unsigned,
    };
    let path = format!("/apps/{}/publish", args.app);
    let outcome = client
        .operate(&path, serde_json::to_value(&request)?, signing.as_ref())
        .await?;
    let published = outcome.published.context("the server published nothing")?;
    print_result(&published, args.json)?;
    Ok(())
}

/// How many blobs are uploaded at the same time.
const UPLOADS_AT_ONCE: usize = 4;

/// Streams one file to `PUT /blobs/{hash}`, streaming it again after a transient failure (an
/// upload is content-addressed, so sending it twice stores it once).
async fn upload_one(client: &Client, hash: ContentHash, file: &LocalFile, bar: &ProgressBar) -> anyhow::Result<()> {
    bar.set_message(
        file.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    // The bar counts the file again on each attempt: what an attempt sent is taken back first.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let what = format!("uploading {}", file.path.display());
    let (status, body) = client
        .retrying(Some(&what), || {
            bar.set_position(bar.position().saturating_sub(sent.swap(0, Ordering::Relaxed)));
            let handle = std::fs::File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
            let (progress, counted) = (bar.clone(), sent.clone());
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(handle)).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    progress.inc(chunk.len() as u64);
                    counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
            let request = client
                .request(Method::PUT, &format!("/blobs/{hash}"))
                .header(reqwest::header::CONTENT_LENGTH, file.size)
                .body(reqwest::Body::wrap_stream(stream))
                .build()
                .context("building the request")?;
            Ok(Some(request))
        })
        .await
        .with_context(|| what.clone())?;
    let _: serde_json::Value = crate::client::decode_bytes(status, &body).with_context(|| what.clone())?;
    Ok(())
}

async fn upload_missing(client: &Client, files: &HashMap<ContentHash, LocalFile>) -> anyhow::Result<()> {
    let hashes: Vec<ContentHash> = files.keys().copied().collect();
    let MissingBlobsResponse { missing } = client.post("/blobs/missing", &MissingBlobsRequest { hashes }).await?;
    let total: u64 = missing.iter().filter_map(|h| files.get(h)).map(|f| f.size).sum();
    let bar = ProgressBar::new(total);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Several at a time, largest first: the server compresses each upload before answering,
    // so the bundles' brotli runs on all its cores at once instead of one after the other.
    let mut queue = Vec::with_capacity(missing.len());
    for hash in &missing {
        let Some(file) = files.get(hash) else {
            bail!("the server asked for a blob that was not offered")
        };
        queue.push((*hash, file));
    }
    queue.sort_by_key(|(_, file)| std::cmp::Reverse(file.size));
    let mut uploads = futures::stream::iter(queue)
        .map(|(hash, file)| upload_one(client, hash, file, &bar))
        .buffer_unordered(UPLOADS_AT_ONCE);
    while let Some(result) = uploads.next().await {
        result?;
    }
    bar.finish_and_clear();
    errln!(
        "{} of {} files uploaded ({} bytes); the rest were already on the server",
        missing.len(),
        files.len(),
        total
    );
    Ok(())
}

fn print_result(published: &PublishedGroup, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(published)?;
        return Ok(());
    }
    outln!("Update group ID  {}", published.group_id)?;
    for update in &published.updates {
        let signed = if update.signed { "signed" } else { "unsigned" };
        outln!(
            "{:<16} {}  (runtime {}, {signed})",
            format!(
                "{} update ID",
                match update.platform {
                    Platform::Ios => "iOS",
                    Platform::Android => "Android",
                }
            ),
            update.id,
            update.runtime_version
        )?;
    }
    outln!("Created at       {}", published.created_at)?;
    outln!("Branch           {}", published.branch)?;
    if let Some(p) = published.rollout_percentage {
        outln!("Rollout          {p}% of devices")?;
    }
    outln!("Manifest URL     {}", published.manifest_url)?;
    Ok(())
}
