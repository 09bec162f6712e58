//! The REST API v4, spoken with reqwest: `Authorization: Bearer`, JSON both ways, answers capped
//! at 8 MiB. Errors are Mattermost's `{id, message, status_code}`: the `id` (an error name, no
//! content) is kept. A 429 (the server's optional rate limit, `X-Ratelimit-Reset` in seconds) is
//! waited out and sent again, twice at most.

use passerelle_sdk::{Secret, SendError};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// The largest answer read.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// The longest wait for a rate limit before the call fails as rate limited.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A call that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Mattermost's error: the HTTP status and its `id`.
    #[error("Mattermost answered {status} {id}")]
    Server {
        /// HTTP status.
        status: u16,
        /// `id`, e.g. `api.context.permissions.app_error`.
        id: String,
    },
    /// Still rate limited.
    #[error("rate limited (retry after {0:?})")]
    RateLimited(Duration),
    /// No answer, or not JSON.
    #[error("{0}")]
    Transport(String),
}

impl ApiError {
    /// The token was refused.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Server { status: 401, .. })
    }

    /// The bus's error for a send that failed so.
    pub fn to_send_error(&self) -> SendError {
        match self {
            Self::Server { status: 401, .. } => {
                SendError::Rejected("Mattermost refused the token (401)".into())
            }
            Self::Server { status: 403, id } => SendError::Rejected(format!("not allowed ({id})")),
            Self::Server { status: 404, .. } => SendError::RoomNotFound,
            Self::Server { status: 413, .. } => SendError::TooLarge,
            Self::Server { status: 400, id }
                if id.contains("message_length") || id.contains("too_long") =>
            {
                SendError::TooLarge
            }
            Self::Server { status, .. } if *status >= 500 => SendError::Disconnected,
            Self::Server { status, id } => {
                SendError::Rejected(format!("Mattermost answered {status} ({id})"))
            }
            Self::RateLimited(d) => SendError::RateLimited { retry_after: *d },
            Self::Transport(_) => SendError::Disconnected,
        }
    }
}

/// A request body.
pub enum Body {
    /// None.
    None,
    /// JSON.
    Json(Value),
    /// A file upload to `POST /files`: the channel, the file's name and bytes.
    File {
        /// The channel it goes to.
        channel: String,
        /// Its name.
        name: String,
        /// Its bytes.
        data: Vec<u8>,
    },
}

/// The server's REST API with one token.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Secret,
    /// The HTTP client (also for file downloads).
    pub http: reqwest::Client,
}

impl Api {
    /// A client for `url` (the server) with `token`.
    pub fn new(url: &str, token: &Secret, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            base: format!("{url}/api/v4"),
            token: token.clone(),
            http,
        })
    }

    /// `Bearer …`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose())
    }

    /// The token, for the WebSocket's `authentication_challenge`.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// `{url}/api/v4/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// `GET {path}`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, &Body::None).await
    }

    /// One call, with the rate-limit waits.
    pub async fn call(&self, method: Method, path: &str, body: &Body) -> Result<Value, ApiError> {
        let mut waited = Duration::ZERO;
        for attempt in 0..3 {
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .header(reqwest::header::AUTHORIZATION, self.bearer());
            req = match body {
                Body::None => req,
                Body::Json(v) => req.json(v),
                Body::File {
                    channel,
                    name,
                    data,
                } => {
                    let part =
                        reqwest::multipart::Part::bytes(data.clone()).file_name(name.clone());
                    req.multipart(
                        reqwest::multipart::Form::new()
                            .text("channel_id", channel.clone())
                            .part("files", part),
                    )
                }
            };
            let answer = req
                .send()
                .await
                .map_err(|e| ApiError::Transport(format!("no answer: {}", e.without_url())))?;
            let status = answer.status().as_u16();
            if status == 429 {
                let reset = answer
                    .headers()
                    .get("x-ratelimit-reset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(100));
                if attempt == 2 || waited + reset > MAX_WAIT {
                    return Err(ApiError::RateLimited(reset));
                }
                tracing::info!(
                    wait_ms = reset.as_millis() as u64,
                    "Mattermost rate limit: waiting"
                );
                tokio::time::sleep(reset).await;
                waited += reset;
                continue;
            }
            let bytes = answer
                .bytes()
                .await
                .map_err(|e| ApiError::Transport(format!("answer cut: {}", e.without_url())))?;
            if bytes.len() > MAX_ANSWER {
                return Err(ApiError::Transport("answer over 8 MiB".into()));
            }
            let value: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|_| ApiError::Transport(format!("HTTP {status}: not JSON")))?
            };
            if (200..300).contains(&status) {
                return Ok(value);
            }
            let id = value
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(120)
                .collect();
            return Err(ApiError::Server { status, id });
        }
        Err(ApiError::RateLimited(Duration::from_secs(1)))
    }
}
