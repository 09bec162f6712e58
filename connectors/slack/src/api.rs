//! The Web API through slack-morphism's client: every method is called by name with a JSON body
//! (or query) and answers JSON, under the method's documented rate tier. slack-morphism throttles
//! each tier (and `chat.postMessage`'s special limit, one per second per channel) and waits out a
//! 429's `Retry-After` up to twice; what is still refused comes back as an [`ApiError`].
//!
//! Slack answers errors as HTTP 200 with `{"ok": false, "error": "code"}`: the code is kept (it
//! names no content) and mapped to the bus's [`SendError`]s.

use crate::config::Settings;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use passerelle_sdk::{Secret, SendError};
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// slack-morphism's client over hyper with our TLS.
pub type Client = SlackClient<SlackClientHyperConnector<HttpsConnector<HttpConnector>>>;

/// A Web API call that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// `{"ok": false, "error": code}`.
    #[error("Slack answered error {0}")]
    Slack(String),
    /// Still rate limited after the retries.
    #[error("rate limited (retry after {0:?})")]
    RateLimited(Duration),
    /// An HTTP status other than 200 or 429.
    #[error("HTTP {0}")]
    Http(u16),
    /// No answer, or not Slack's JSON.
    #[error("{0}")]
    Transport(String),
}

impl ApiError {
    /// Slack's error code, if it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Slack(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the token is refused (for good, until the config changes).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.code(),
            Some(
                "invalid_auth"
                    | "not_authed"
                    | "account_inactive"
                    | "token_revoked"
                    | "token_expired"
                    | "not_allowed_token_type"
            )
        )
    }

    /// The bus's error for a send that failed so.
    pub fn to_send_error(&self) -> SendError {
        match self {
            Self::Slack(code) => match code.as_str() {
                "channel_not_found" | "not_in_channel" | "is_archived" => SendError::RoomNotFound,
                "msg_too_long" | "invalid_blocks" => SendError::TooLarge,
                "ratelimited" => SendError::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                    SendError::Disconnected
                }
                c if self.is_auth() => {
                    SendError::Rejected(format!("Slack refused the token ({c})"))
                }
                other => SendError::Rejected(format!("Slack answered {other}")),
            },
            Self::RateLimited(d) => SendError::RateLimited { retry_after: *d },
            Self::Http(s) if *s >= 500 => SendError::Disconnected,
            Self::Http(s) => SendError::Rejected(format!("Slack answered HTTP {s}")),
            Self::Transport(_) => SendError::Disconnected,
        }
    }
}

fn map_error(e: SlackClientError) -> ApiError {
    match e {
        SlackClientError::ApiError(a) => ApiError::Slack(a.code.chars().take(64).collect()),
        SlackClientError::RateLimitError(r) => {
            ApiError::RateLimited(r.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        SlackClientError::HttpError(h) => ApiError::Http(h.status_code.as_u16()),
        // Transport and protocol errors may quote a body: keep only their kind.
        SlackClientError::HttpProtocolError(_) => ApiError::Transport("HTTP protocol error".into()),
        SlackClientError::EndOfStream(_) => ApiError::Transport("connection closed".into()),
        SlackClientError::SystemError(_) => ApiError::Transport("no answer".into()),
        SlackClientError::ProtocolError(_) => {
            ApiError::Transport("answer is not Slack's JSON".into())
        }
        SlackClientError::SocketModeProtocolError(_) => ApiError::Transport("socket mode".into()),
    }
}

/// How many calls per minute a method may make, by Slack's tiers.
#[derive(Clone, Copy, Debug)]
pub enum Tier {
    /// 1+ per minute (`apps.connections.open`).
    T1,
    /// 20+ per minute (`conversations.list`, `conversations.history`, `files.completeUploadExternal`).
    T2,
    /// 50+ per minute (`chat.update`, `chat.delete`, `conversations.info`, `conversations.open`).
    T3,
    /// 100+ per minute (`users.info`, `files.getUploadURLExternal`, `auth.test`, reactions).
    T4,
}

fn tier_config(t: Tier) -> SlackApiMethodRateControlConfig {
    let tier = match t {
        Tier::T1 => SlackApiMethodRateTier::Tier1,
        Tier::T2 => SlackApiMethodRateTier::Tier2,
        Tier::T3 => SlackApiMethodRateTier::Tier3,
        Tier::T4 => SlackApiMethodRateTier::Tier4,
    };
    SlackApiMethodRateControlConfig::new().with_tier(tier)
}

/// The bot's (and the app's) Web API.
#[derive(Clone)]
pub struct Api {
    client: Arc<Client>,
    bot: Arc<SlackApiToken>,
    app: Option<Arc<SlackApiToken>>,
    bot_secret: Secret,
    /// Downloads of files (with the bot token) and uploads to Slack's upload URLs.
    pub http: reqwest::Client,
}

impl Api {
    /// A client for `settings`' tokens and API base.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let tls = passerelle_sdk::tls::client_config(None)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let rate = SlackApiRateControlConfig::new()
            .with_max_retries(2)
            .with_max_delay_timeout(Duration::from_secs(30));
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(&settings.api_base)
            .with_rate_control(rate);
        let token = |s: &Secret| Arc::new(SlackApiToken::new(s.expose().to_owned().into()));
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            bot: token(&settings.bot_token),
            app: settings.app_token.as_ref().map(token),
            bot_secret: settings.bot_token.clone(),
            http,
        })
    }

    /// `POST {method}` with a JSON body, as the bot.
    pub async fn call(&self, method: &str, body: &Value, tier: Tier) -> Result<Value, ApiError> {
        let cfg = tier_config(tier);
        let session = self.client.open_session(&self.bot);
        session
            .http_session_api
            .http_post::<Value, Value>(method, body, Some(&cfg))
            .await
            .map_err(map_error)
    }

    /// `chat.postMessage`, under its special limit of one per second per channel.
    pub async fn post_message(&self, channel: &str, body: &Value) -> Result<Value, ApiError> {
        let cfg = SlackApiMethodRateControlConfig::new().with_special_rate_limit(
            SlackApiRateControlSpecialLimit::new(
                SlackApiRateControlSpecialLimitKey(format!("chat.postMessage/{channel}")),
                SlackApiRateControlLimit::new(1, Duration::from_secs(1)),
            ),
        );
        let session = self.client.open_session(&self.bot);
        session
            .http_session_api
            .http_post::<Value, Value>("chat.postMessage", body, Some(&cfg))
            .await
            .map_err(map_error)
    }

    /// `GET {method}?params`, as the bot.
    pub async fn get(
        &self,
        method: &str,
        params: &[(&str, String)],
        tier: Tier,
    ) -> Result<Value, ApiError> {
        let cfg = tier_config(tier);
        let session = self.client.open_session(&self.bot);
        let params: Vec<(&str, Option<&String>)> =
            params.iter().map(|(k, v)| (*k, Some(v))).collect();
        session
            .http_session_api
            .http_get::<Value, _, &String>(method, &params, Some(&cfg))
            .await
            .map_err(map_error)
    }

    /// `apps.connections.open` with the app token: a Socket Mode URL.
    pub async fn open_connection(&self) -> Result<String, ApiError> {
        let app = self
            .app
            .as_ref()
            .ok_or_else(|| ApiError::Transport("no app token".into()))?;
        let cfg = tier_config(Tier::T1);
        let session = self.client.open_session(app);
        let v: Value = session
            .http_session_api
            .http_post::<Value, Value>("apps.connections.open", &serde_json::json!({}), Some(&cfg))
            .await
            .map_err(map_error)?;
        v.get("url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Transport("apps.connections.open gave no url".into()))
    }

    /// The bot token, for downloading a file's `url_private`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.bot_secret.expose())
    }
}
