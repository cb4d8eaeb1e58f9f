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
            bail!(
                "--server must be an http:// or https:// URL, got {:?}",
                args.server
            );
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

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
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
    let bytes = response
        .bytes()
        .await
        .context("reading the server's answer")?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .context("the server's answer is not the expected JSON");
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_owned)
    };
    Err(ServerError {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| "unknown".into()),
        message: field("message")
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect()),
    }
    .into())
}
