//! Discord's REST API (`/api/v10`), with its rate limits followed from the headers.
//!
//! Every answer's `X-RateLimit-Bucket`, `-Remaining` and `-Reset-After` are kept per bucket and
//! top-level resource (a channel, a guild, a webhook): a request whose bucket has nothing left
//! waits for its reset before it is sent, so the bridge does not learn its limits from 429s. A
//! 429 anyway (a limit shared with another client, the global 50 requests per second) is waited
//! out as its body's `retry_after` says, for the bucket or, with `global`, for every request,
//! and the request is sent again, twice at most; a longer wait goes back to the daemon as
//! `RateLimited`. Errors are Discord's JSON error codes, typed ([`RestError`]).

use passerelle_sdk::{SendError, Text};
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The largest answer read from Discord (a page of 100 messages is well under it).
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// The longest rate-limit wait spent inside one call; a longer one goes back to the daemon.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Why a REST call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// 401: the token was refused.
    #[error("Discord refused the bot token (401)")]
    Unauthorized,
    /// A JSON error from Discord: the HTTP status and Discord's error code.
    #[error("Discord answered {status} (code {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Discord's JSON error code (`10003` unknown channel, `50013` missing permissions…),
        /// 0 when the body had none.
        code: u64,
    },
    /// Rate limited for longer than one call waits.
    #[error("rate limited for {0:?}")]
    RateLimited(Duration),
    /// Discord could not be reached, or answered 5xx.
    #[error("Discord is unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not what the API documents.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl RestError {
    /// Discord's error code, when it gave one.
    pub fn code(&self) -> Option<u64> {
        match self {
            Self::Api { code, .. } if *code != 0 => Some(*code),
            _ => None,
        }
    }

    /// The typed error for the daemon.
    pub fn to_send_error(&self) -> SendError {
        match self {
            Self::Unauthorized | Self::Unreachable(_) => SendError::Disconnected,
            Self::RateLimited(wait) => SendError::RateLimited { retry_after: *wait },
            Self::Api { code: 10003, .. } => SendError::RoomNotFound,
            Self::Api { code: 50001, .. } => {
                SendError::Rejected("missing access to the channel (50001)".into())
            }
            Self::Api { code: 50013, .. } => {
                SendError::Rejected("missing permissions (50013)".into())
            }
            Self::Api { code: 10008, .. } => SendError::Rejected("unknown message (10008)".into()),
            Self::Api { code: 40005, .. } | Self::Api { status: 413, .. } => SendError::TooLarge,
            Self::Api { status, .. } if *status >= 500 => SendError::Disconnected,
            Self::Api { status, code } => {
                SendError::Rejected(format!("Discord answered {status} (code {code})"))
            }
            Self::Unexpected(why) => SendError::Rejected(format!("unexpected answer: {why}")),
        }
    }
}

/// A request body: JSON, or a multipart form rebuilt for each attempt (files as bytes).
#[derive(Clone)]
pub enum Body {
    /// No body.
    None,
    /// `application/json`.
    Json(Value),
    /// `multipart/form-data`: `payload_json` and `files[n]`.
    Files {
        /// The JSON part.
        payload: Value,
        /// Name, MIME type and bytes of each file.
        files: Vec<(String, String, Arc<Vec<u8>>)>,
    },
}

#[derive(Debug, Default)]
struct BucketState {
    remaining: u64,
    reset_at: Option<Instant>,
}

#[derive(Default)]
struct Limits {
    /// Route (method and path with ids other than the top-level one elided) to bucket hash.
    routes: HashMap<String, String>,
    /// (bucket hash, top-level resource) to its state.
    buckets: HashMap<(String, String), BucketState>,
    global_until: Option<Instant>,
}

/// What the limiter saw, for tests and logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// 429 answers received.
    pub too_many: AtomicU64,
    /// Requests that waited for a bucket's reset before being sent.
    pub waited: AtomicU64,
}

/// The REST client of one bot.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    auth: passerelle_sdk::Secret,
    limits: Arc<Mutex<Limits>>,
    /// What the limiter saw.
    pub stats: Arc<Stats>,
}

/// The route and top-level resource of a path (`channels/1/messages/2` is route
/// `channels/1/messages/{id}`, resource `channels/1`).
fn route_of(method: &Method, path: &str) -> (String, String) {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    let major_len = match parts.first() {
        Some(&"webhooks") => 3,
        Some(&"channels") | Some(&"guilds") => 2,
        _ => 0,
    }
    .min(parts.len());
    let major = parts[..major_len].join("/");
    let mut route = vec![method.as_str().to_owned()];
    for (i, p) in parts.iter().enumerate() {
        let elided = i >= major_len && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        // Reactions share one bucket whatever the emoji.
        let emoji = i > 0 && parts[i - 1] == "reactions" && *p != "@me";
        route.push(if elided || emoji {
            "{id}".into()
        } else {
            (*p).to_owned()
        });
    }
    (route.join("/"), major)
}

fn header_f64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 3600.0))
}

impl Rest {
    /// A client for `base` (`https://discord.com/api/v10`).
    pub fn new(
        base: &str,
        token: &passerelle_sdk::Secret,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!(
                "DiscordBot (https://example.invalid/passerelle, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth: passerelle_sdk::Secret::new(format!("Bot {}", token.expose())),
            limits: Arc::new(Mutex::new(Limits::default())),
            stats: Arc::new(Stats::default()),
        })
    }

    /// Waits until the route's bucket and the global limit let a request through, and takes one
    /// request from the bucket. `Err` when the wait would be longer than [`MAX_WAIT`].
    async fn acquire(&self, route: &str, major: &str) -> Result<(), RestError> {
        loop {
            let wait = {
                let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let mut wait = limits.global_until.filter(|t| *t > now).map(|t| t - now);
                if wait.is_none()
                    && let Some(bucket) = limits.routes.get(route).cloned()
                    && let Some(state) = limits.buckets.get_mut(&(bucket, major.to_owned()))
                {
                    match state.reset_at {
                        Some(t) if t <= now => {
                            // Reset: unknown until the next answer; let this one through.
                            state.reset_at = None;
                        }
                        Some(t) if state.remaining == 0 => wait = Some(t - now),
                        _ => state.remaining = state.remaining.saturating_sub(1),
                    }
                }
                wait
            };
            match wait {
                None => return Ok(()),
                Some(w) if w > MAX_WAIT => return Err(RestError::RateLimited(w)),
                Some(w) => {
                    self.stats.waited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(w).await;
                }
            }
        }
    }

    fn learn(&self, route: &str, major: &str, headers: &reqwest::header::HeaderMap) {
        let Some(bucket) = headers
            .get("x-ratelimit-bucket")
            .and_then(|v| v.to_str().ok())
            .filter(|b| !b.is_empty() && b.len() <= 64)
        else {
            return;
        };
        let remaining = header_f64(headers, "x-ratelimit-remaining");
        let reset_after = header_f64(headers, "x-ratelimit-reset-after");
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.routes.len() > 4096 {
            limits.routes.clear();
        }
        if limits.buckets.len() > 16384 {
            limits.buckets.clear();
        }
        limits.routes.insert(route.to_owned(), bucket.to_owned());
        let state = limits
            .buckets
            .entry((bucket.to_owned(), major.to_owned()))
            .or_default();
        if let (Some(remaining), Some(reset_after)) = (remaining, reset_after) {
            state.remaining = remaining.max(0.0) as u64;
            state.reset_at = Some(Instant::now() + secs(reset_after));
        }
    }

    fn hold(&self, route: &str, major: &str, wait: Duration, global: bool) {
        let until = Instant::now() + wait;
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if global {
            limits.global_until = Some(until);
        } else if let Some(bucket) = limits.routes.get(route).cloned() {
            let state = limits
                .buckets
                .entry((bucket, major.to_owned()))
                .or_default();
            state.remaining = 0;
            state.reset_at = Some(until);
        } else {
            // A route not seen yet: hold it under its own name.
            limits.routes.insert(route.to_owned(), route.to_owned());
            limits.buckets.insert(
                (route.to_owned(), major.to_owned()),
                BucketState {
                    remaining: 0,
                    reset_at: Some(until),
                },
            );
        }
    }

    /// Calls `method path` (relative to the base, without a leading `/`) with `body`; the JSON
    /// answer (`Null` for 204).
    pub async fn call(&self, method: Method, path: &str, body: &Body) -> Result<Value, RestError> {
        let (route, major) = route_of(&method, path);
        let url = format!("{}/{path}", self.base);
        for attempt in 0..3 {
            self.acquire(&route, &major).await?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("authorization", self.auth.expose());
            request = match body {
                Body::None => request,
                Body::Json(v) => request.json(v),
                Body::Files { payload, files } => {
                    let mut form =
                        reqwest::multipart::Form::new().text("payload_json", payload.to_string());
                    for (i, (name, mime, data)) in files.iter().enumerate() {
                        let part = reqwest::multipart::Part::bytes(data.as_ref().clone())
                            .file_name(name.clone())
                            .mime_str(mime)
                            .map_err(|_| {
                                RestError::Unexpected("file type not understood".into())
                            })?;
                        form = form.part(format!("files[{i}]"), part);
                    }
                    request.multipart(form)
                }
            };
            let response = request
                .send()
                .await
                .map_err(|e| RestError::Unreachable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            self.learn(&route, &major, &headers);
            let answer = read_capped(response).await?;
            if status == 429 {
                self.stats.too_many.fetch_add(1, Ordering::Relaxed);
                let parsed: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                let retry = parsed
                    .get("retry_after")
                    .and_then(Value::as_f64)
                    .or_else(|| header_f64(&headers, "retry-after"))
                    .unwrap_or(1.0);
                let global = parsed.get("global").and_then(Value::as_bool) == Some(true)
                    || headers.get("x-ratelimit-global").is_some();
                let wait = secs(retry);
                tracing::warn!(route = %route, global, wait_ms = wait.as_millis() as u64, "Discord rate limit hit (429)");
                self.hold(&route, &major, wait, global);
                if wait > MAX_WAIT || attempt == 2 {
                    return Err(RestError::RateLimited(wait));
                }
                continue;
            }
            if status == 204 {
                return Ok(Value::Null);
            }
            if !(200..300).contains(&status) {
                if status >= 500 {
                    return Err(RestError::Unreachable(format!("HTTP {status}")));
                }
                let code = serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .and_then(|v| v.get("code").and_then(Value::as_u64))
                    .unwrap_or(0);
                // 50027 is a webhook's token refused, not the bot's.
                if status == 401 && code != 50027 {
                    return Err(RestError::Unauthorized);
                }
                return Err(RestError::Api { status, code });
            }
            return serde_json::from_slice(&answer)
                .map_err(|e| RestError::Unexpected(format!("not JSON: {e}")));
        }
        Err(RestError::RateLimited(Duration::from_secs(1)))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, RestError> {
        self.call(Method::GET, path, &Body::None).await
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, RestError> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RestError::Unreachable(e.without_url().to_string()))?
    {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err(RestError::Unexpected(format!(
                "an answer over {MAX_ANSWER} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A snowflake field (`"id": "123"`) as a number.
pub fn snowflake(v: &Value, field: &str) -> Option<u64> {
    v.get(field)?.as_str()?.parse().ok()
}

/// An emoji for a reaction path: a unicode emoji percent-encoded, or `name:id` for a custom one.
pub fn emoji_path(key: &Text) -> String {
    percent_encoding::utf8_percent_encode(key.as_str(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_the_top_level_resource_and_elide_the_rest() {
        let (route, major) = route_of(&Method::PATCH, "channels/11/messages/22");
        assert_eq!(
            (route.as_str(), major.as_str()),
            ("PATCH/channels/11/messages/{id}", "channels/11")
        );
        let (route, major) = route_of(&Method::POST, "webhooks/5/tok-en?wait=true&thread_id=9");
        assert_eq!(
            (route.as_str(), major.as_str()),
            ("POST/webhooks/5/tok-en", "webhooks/5/tok-en")
        );
        let (a, _) = route_of(
            &Method::PUT,
            "channels/1/messages/2/reactions/%F0%9F%91%8D/@me",
        );
        let (b, _) = route_of(
            &Method::PUT,
            "channels/1/messages/3/reactions/party%3A77/@me",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn error_codes_become_typed_send_errors() {
        let e = |code| RestError::Api { status: 403, code }.to_send_error();
        assert_eq!(e(10003), SendError::RoomNotFound);
        assert!(matches!(e(50013), SendError::Rejected(ref r) if r.contains("50013")));
        assert!(matches!(e(50001), SendError::Rejected(ref r) if r.contains("50001")));
        assert!(
            RestError::RateLimited(Duration::from_secs(3))
                .to_send_error()
                .is_retryable()
        );
        assert!(
            RestError::Unreachable("x".into())
                .to_send_error()
                .is_retryable()
        );
        assert_eq!(
            RestError::Api {
                status: 413,
                code: 0
            }
            .to_send_error(),
            SendError::TooLarge
        );
    }
}
