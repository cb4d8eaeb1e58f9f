//! The typed client of the management API, shared by every CLI command that talks to a server.

use std::time::Duration;

use aloft_core::halt::{DEFAULT_POLICY, HaltPolicy};
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder, StatusCode};
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

// When a rollout halts by itself (a plain comment: clap would take a doc comment as the description of the commands that
// flatten this).
#[derive(Args, Debug, Clone, Default)]
pub struct HaltArgs {
    /// Halt the rollout by itself when, on a platform, more than PCT percent of the devices that
    /// ran its update report it failed (and more than fail on the control update) [default: the app's
    /// policy, else 5].
    #[arg(long, value_name = "PCT")]
    pub halt_on_failure_rate: Option<f64>,
    /// ...once at least N devices installed it on that platform [default: the app's policy,
    /// else 50].
    #[arg(long, value_name = "N")]
    pub halt_min_devices: Option<u64>,
    /// Never halt this rollout by itself.
    #[arg(long, conflicts_with_all = ["halt_on_failure_rate", "halt_min_devices"])]
    pub no_halt: bool,
}

impl HaltArgs {
    /// The request's `halt_policy`: given when either flag is, the other from the built-in
    /// default.
    pub fn policy(&self) -> Option<HaltPolicy> {
        if self.halt_on_failure_rate.is_none() && self.halt_min_devices.is_none() {
            return None;
        }
        Some(HaltPolicy {
            failure_rate: self.halt_on_failure_rate.unwrap_or(DEFAULT_POLICY.failure_rate),
            min_devices: self.halt_min_devices.unwrap_or(DEFAULT_POLICY.min_devices),
        })
    }

    pub fn any(&self) -> bool {
        self.no_halt || self.policy().is_some()
    }
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
            .connect_timeout(Duration::from_secs(10))
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
    /// message that says what went wrong. Transient failures are retried (see [`Client::exchange`]).
    pub async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let (status, bytes) = self.exchange(request).await?;
        decode_bytes(status, &bytes)
    }

    /// Sends a request whose success has no body (201/204).
    pub async fn send_empty(&self, request: RequestBuilder) -> anyhow::Result<()> {
        let (status, bytes) = self.exchange(request).await?;
        if status.is_success() {
            return Ok(());
        }
        decode_bytes::<serde_json::Value>(status, &bytes).map(drop)
    }

    /// Sends a request and reads its whole answer, retrying what may go right the next time.
    ///
    /// A write (anything but `GET`/`HEAD`, and not `?prepare=true`, which changes nothing) gets
    /// an `Idempotency-Key` made for it here, and every retry sends the same one: if an earlier
    /// attempt did act and only its answer was lost, the server answers the retry with that
    /// first answer instead of acting twice. Retried, after [`RETRY_DELAYS`]: no connection, a
    /// connection that broke or timed out before the whole answer arrived, 502/503/504, and 409
    /// `idempotency_in_progress` (the first attempt is still running). Nothing else: a 4xx would
    /// come back the same. A streamed body (a blob upload) cannot be sent twice and is not retried
    /// here; [`Client::retrying`] with a request made anew each time does that.
    pub async fn exchange(&self, request: RequestBuilder) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = request.build().context("building the request")?;
        if changes_something(&request) && !request.headers().contains_key(IDEMPOTENCY_KEY) {
            let key = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())?;
            request.headers_mut().insert(IDEMPOTENCY_KEY, key);
        }
        let mut next = Some(request);
        self.retrying(None, move || {
            let current = next.take();
            next = current.as_ref().and_then(reqwest::Request::try_clone);
            Ok(current)
        })
        .await
    }

    /// Sends the requests `attempts` makes, one after each transient failure (see
    /// [`Client::exchange`]) until it has no more (`None`) or [`RETRY_DELAYS`] run out. Each
    /// retry is noted on stderr, after `what` when given.
    pub async fn retrying(
        &self,
        what: Option<&str>,
        mut attempts: impl FnMut() -> anyhow::Result<Option<reqwest::Request>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = attempts()?.context("no request to send")?;
        let mut delays = RETRY_DELAYS.iter().enumerate();
        loop {
            let result = self.attempt(request).await;
            let why = match &result {
                Ok((status, body)) => transient_answer(*status, body),
                Err(e) => transient_error(e),
            };
            let give_up = |result: reqwest::Result<(StatusCode, Bytes)>| {
                result.with_context(|| format!("no answer from the server at {}", self.base))
            };
            let (Some(why), Some((n, delay))) = (why, delays.next()) else {
                return give_up(result);
            };
            let Some(next) = attempts()? else {
                return give_up(result);
            };
            let what = what.map(|w| format!("{w}: ")).unwrap_or_default();
            eprintln!(
                "{what}{why}; retrying in {} s ({} of {} retries)",
                delay.as_secs_f32(),
                n + 1,
                RETRY_DELAYS.len()
            );
            tokio::time::sleep(*delay).await;
            request = next;
        }
    }

    async fn attempt(&self, request: reqwest::Request) -> reqwest::Result<(StatusCode, Bytes)> {
        let response = self.http.execute(request).await?;
        let status = response.status();
        Ok((status, response.bytes().await?))
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

/// The JSON of a success, or the server's structured error as a [`ServerError`].
pub fn decode_bytes<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> anyhow::Result<T> {
    if status.is_success() {
        return serde_json::from_slice(bytes).context("the server's answer is not the expected JSON");
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_owned)
    };
    // The server's words are shown as they are, but with control characters escaped: they
    // must not be able to drive the terminal.
    let clean = |text: String| crate::output::clean(&text).into_owned();
    let code = field("code").unwrap_or_else(|| "unknown".into());
    let message = if code == "idempotency_in_progress" {
        // Only after every retry: the key dies with this command, so say what to do instead.
        "the first attempt is still running on the server and did not finish while this command waited; \
         it may yet succeed: look (e.g. `aloft updates list`) before running the command again"
            .to_owned()
    } else {
        field("message").unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(500).collect())
    };
    Err(ServerError {
        status: status.as_u16(),
        code: clean(code),
        message: clean(message),
    }
    .into())
}

/// The header that makes a retried write safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The waits before each retry of a transient failure: 7.5 s in all.
pub const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Whether a request may change something on the server, and so carries an idempotency key.
fn changes_something(request: &reqwest::Request) -> bool {
    let prepare = request
        .url()
        .query_pairs()
        .any(|(k, v)| k == "prepare" && matches!(&*v, "true" | "1" | ""));
    !(request.method() == Method::GET || request.method() == Method::HEAD || prepare)
}

/// Why an answer is worth asking for again, if it is.
fn transient_answer(status: StatusCode, body: &[u8]) -> Option<String> {
    match status.as_u16() {
        502..=504 => Some(format!("the server answered {status}")),
        409 if serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|v| v["error"]["code"] == "idempotency_in_progress") =>
        {
            Some("the server is still working on the first attempt".to_owned())
        }
        _ => None,
    }
}

/// Why a request that got no (whole) answer is worth sending again, if it is.
fn transient_error(e: &reqwest::Error) -> Option<String> {
    if e.is_connect() {
        Some("cannot connect to the server".to_owned())
    } else if e.is_timeout() {
        Some("the server did not answer in time".to_owned())
    } else if e.is_request() || e.is_body() || e.is_decode() {
        Some("the connection broke before the server's answer arrived".to_owned())
    } else {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, url: &str) -> reqwest::Request {
        reqwest::Client::new().request(method, url).build().unwrap()
    }

    #[test]
    fn writes_carry_a_key_and_reads_and_prepares_do_not() {
        let base = "http://aloft.test/api/v1";
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_something(&request(
                method.clone(),
                &format!("{base}/apps/a/publish")
            )));
            assert!(!changes_something(&request(
                method,
                &format!("{base}/apps/a/publish?prepare=true")
            )));
        }
        assert!(changes_something(&request(
            Method::POST,
            &format!("{base}/apps/a/publish?force=1")
        )));
        assert!(!changes_something(&request(Method::GET, &format!("{base}/apps"))));
        assert!(!changes_something(&request(Method::HEAD, &format!("{base}/apps"))));
    }

    #[test]
    fn only_gateway_failures_and_a_running_first_attempt_are_retried() {
        let in_progress = br#"{"error":{"code":"idempotency_in_progress","message":"..."}}"#;
        let stale = br#"{"error":{"code":"stale_commit","message":"..."}}"#;
        for status in [502, 503, 504] {
            assert!(transient_answer(StatusCode::from_u16(status).unwrap(), b"").is_some());
        }
        assert!(transient_answer(StatusCode::CONFLICT, in_progress).is_some());
        assert!(transient_answer(StatusCode::CONFLICT, stale).is_none());
        for status in [200, 201, 400, 401, 404, 422, 500] {
            assert!(transient_answer(StatusCode::from_u16(status).unwrap(), in_progress).is_none());
        }
    }

    #[test]
    fn retries_wait_less_than_ten_seconds_in_all() {
        assert!(RETRY_DELAYS.iter().sum::<Duration>() < Duration::from_secs(10));
    }
}
