//! The typed client of the management API, shared by every CLI command that talks to a server.

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the server is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Base URL of the Aloft server.
    #[arg(long, env = "ALOFT_SERVER")]
    pub server: String,
    /// API token (from `aloft tokens create`).
    #[arg(long, env = "ALOFT_TOKEN", hide_env_values = true)]
    pub token: String,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let base = args.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server must be an http:// or https:// URL, got {:?}", args.server);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("aloft-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            token: args.token.clone(),
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request and decodes the JSON answer, or turns the server's error body into a
    /// message that says what went wrong.
    pub async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        decode(response).await
    }

    /// Sends a request whose success has no body (201/204).
    pub async fn send_empty(&self, request: RequestBuilder) -> anyhow::Result<()> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(());
        }
        match decode::<serde_json::Value>(response).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }
}

/// The server's structured error, when it sent one.
#[derive(Debug)]
pub struct ServerError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server refused ({} {}): {}",
            self.status, self.code, self.message
        )
    }
}

impl std::error::Error for ServerError {}

pub async fn decode<T: DeserializeOwned>(response: Response) -> anyhow::Result<T> {
    let status = response.status();
    let bytes = response.bytes().await.context("reading the server's answer")?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).context("the server's answer is not the expected JSON");
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_owned)
    };
    // The server's words are shown as they are, but with control characters escaped: they
    // must not be able to drive the terminal.
    let clean = |text: String| crate::output::clean(&text).into_owned();
    Err(ServerError {
        status: status.as_u16(),
        code: clean(field("code").unwrap_or_else(|| "unknown".into())),
        message: clean(field("message").unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect())),
    }
    .into())
}

/// `--signing-key`/`--keyid`, for every command that may publish (and so must sign).
#[derive(Args, Debug, Clone)]
pub struct SigningArgs {
    /// PEM private key to sign with, here: the key never leaves this machine. Without it,
    /// updates are signed by the app's server-side key, if it has one.
    #[arg(long, requires = "keyid", env = "ALOFT_SIGNING_KEY")]
    pub signing_key: Option<std::path::PathBuf>,
    /// Key id of --signing-key: the `codeSigningMetadata.keyid` of the app.
    #[arg(long, env = "ALOFT_KEYID")]
    pub keyid: Option<String>,
    /// Store the updates unsigned even though the app's earlier updates were signed. Devices
    /// built with a code-signing certificate refuse unsigned updates, so the server refuses this
    /// unless asked.
    #[arg(long, conflicts_with = "signing_key")]
    pub allow_unsigned: bool,
}

/// A loaded signing key and its key id.
pub struct Signing {
    signer: aloft_core::signature::Signer,
    keyid: String,
}

impl SigningArgs {
    pub fn load(&self) -> anyhow::Result<Option<Signing>> {
        let (Some(path), Some(keyid)) = (&self.signing_key, &self.keyid) else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading signing key {}", path.display()))?;
        let signer = aloft_core::signature::Signer::from_pem(&pem)
            .with_context(|| format!("{} is not a usable RSA private key", path.display()))?;
        Ok(Some(Signing {
            signer,
            keyid: keyid.clone(),
        }))
    }
}

impl Signing {
    /// Signs every prepared body and says which bytes were signed.
    fn commit(&self, prepared: &aloft_core::api::PreparedGroup) -> anyhow::Result<aloft_core::api::CommitInfo> {
        let mut updates = Vec::with_capacity(prepared.updates.len());
        for u in &prepared.updates {
            let sig = self.signer.sign(u.body.as_bytes())?;
            updates.push(aloft_core::api::CommitUpdate {
                platform: u.platform,
                runtime_version: u.runtime_version.clone(),
                id: u.id,
                sha256: aloft_core::ContentHash::of(u.body.as_bytes()).to_hex(),
                signature: Some(aloft_core::signature::CodeSignature::new(sig, self.keyid.clone())?),
            });
        }
        Ok(aloft_core::api::CommitInfo {
            group_id: prepared.group_id,
            created_at: prepared.created_at.clone(),
            updates,
        })
    }
}

impl Client {
    /// Runs an operation that may publish. With a signing key: `?prepare=true` returns the exact
    /// bodies, they are signed here, and the operation is sent again with the signatures. When
    /// another change lands in between, the server refuses the commit as stale and it starts over.
    pub async fn operate(
        &self,
        path: &str,
        body: serde_json::Value,
        signing: Option<&Signing>,
    ) -> anyhow::Result<aloft_core::api::Outcome> {
        let Some(signing) = signing else {
            return self.post(path, &body).await;
        };
        let mut attempt = 0;
        loop {
            let prepared: aloft_core::api::PreparedGroup = self.post(&format!("{path}?prepare=true"), &body).await?;
            let mut signed = body.clone();
            signed["commit"] = serde_json::to_value(signing.commit(&prepared)?)?;
            match self.post(path, &signed).await {
                Err(e) if attempt < 5 && e.downcast_ref::<ServerError>().is_some_and(ServerError::is_stale) => {
                    attempt += 1;
                    eprintln!("another change landed first; preparing again");
                }
                other => return other,
            }
        }
    }
}

impl ServerError {
    pub fn is_stale(&self) -> bool {
        self.code == "stale_created_at" || self.code == "stale_commit"
    }
}
