//! The Bot API client: `{api_base}/bot<token>/<method>` with JSON or multipart parameters,
//! answers `{"ok":true,"result":…}` or `{"ok":false,"error_code","description","parameters"?}`.
//!
//! The token is part of every URL, so no URL ever reaches an error or a log: transport errors
//! are stripped of theirs.

use passerelle_sdk::{Secret, SendError};
use serde_json::Value;
use std::time::Duration;

/// What a Bot API call failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No answer (connection, timeout) or a 5xx without the error shape: worth retrying.
    #[error("Bot API unreachable: {0}")]
    Unreachable(String),
    /// The API answered `ok: false`.
    #[error("Bot API error {code}: {description}")]
    Api {
        /// `error_code` (an HTTP status).
        code: i64,
        /// `description` (no message content: Telegram's own words about the call).
        description: String,
        /// `parameters.retry_after`, seconds.
        retry_after: Option<u64>,
        /// `parameters.migrate_to_chat_id`: the group became this supergroup.
        migrate_to: Option<i64>,
    },
    /// A success with a body that is not what the API documents.
    #[error("Bot API answer not understood: {0}")]
    Unexpected(String),
}

impl ApiError {
    /// Whether the token was refused (401, or 404 for a token the server does not know).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::Api {
                code: 401 | 404,
                ..
            }
        )
    }

    /// The typed send error for this failure.
    pub fn to_send_error(&self) -> SendError {
        match self {
            Self::Unreachable(_) => SendError::Disconnected,
            Self::Unexpected(why) => SendError::Rejected(why.clone()),
            Self::Api {
                code,
                description,
                retry_after,
                ..
            } => match code {
                429 => SendError::RateLimited {
                    retry_after: Duration::from_secs(retry_after.unwrap_or(5)),
                },
                401 | 404 => SendError::Disconnected,
                c if *c >= 500 => SendError::Disconnected,
                400 if description.contains("chat not found") => SendError::RoomNotFound,
                403 => SendError::RoomNotFound,
                400 if description.contains("too long") => SendError::TooLarge,
                _ => SendError::Rejected(format!("Bot API error {code}: {description}")),
            },
        }
    }
}

/// One bot's client.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base: String,
    files: String,
    timeout: Duration,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BotApi")
    }
}

fn unreachable(e: reqwest::Error) -> ApiError {
    ApiError::Unreachable(e.without_url().to_string())
}

/// Reads a Bot API answer.
pub fn answer(status: u16, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if status >= 500 || status == 429 => {
            return Err(ApiError::Unreachable(format!("HTTP {status}")));
        }
        Err(_) => {
            return Err(ApiError::Unexpected(format!(
                "HTTP {status} body is not JSON"
            )));
        }
    };
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return v
            .get("result")
            .cloned()
            .ok_or_else(|| ApiError::Unexpected("ok without result".into()));
    }
    let params = v.get("parameters");
    Err(ApiError::Api {
        code: v
            .get("error_code")
            .and_then(Value::as_i64)
            .unwrap_or(i64::from(status)),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
        retry_after: params
            .and_then(|p| p.get("retry_after"))
            .and_then(Value::as_u64),
        migrate_to: params
            .and_then(|p| p.get("migrate_to_chat_id"))
            .and_then(Value::as_i64),
    })
}

impl BotApi {
    /// A client for the bot with `token` on `api_base`.
    pub fn new(api_base: &str, token: &Secret, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: format!("{api_base}/bot{}", token.expose()),
            files: format!("{api_base}/file/bot{}", token.expose()),
            timeout,
        })
    }

    async fn finish(&self, request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        answer(status, &body)
    }

    /// Calls `method` with JSON `params`.
    pub async fn call(&self, method: &str, params: &Value) -> Result<Value, ApiError> {
        self.finish(
            self.http
                .post(format!("{}/{method}", self.base))
                .timeout(self.timeout)
                .json(params),
        )
        .await
    }

    /// Calls `method` with JSON `params`, waiting up to `extra` longer than usual (long polls).
    pub async fn call_long(
        &self,
        method: &str,
        params: &Value,
        extra: Duration,
    ) -> Result<Value, ApiError> {
        self.finish(
            self.http
                .post(format!("{}/{method}", self.base))
                .timeout(self.timeout + extra)
                .json(params),
        )
        .await
    }

    /// Calls `method` with a multipart form (file uploads).
    pub async fn call_form(
        &self,
        method: &str,
        form: reqwest::multipart::Form,
    ) -> Result<Value, ApiError> {
        self.finish(
            self.http
                .post(format!("{}/{method}", self.base))
                .timeout(self.timeout * 4)
                .multipart(form),
        )
        .await
    }

    /// Downloads a file by the `file_path` `getFile` gave, at most `max` bytes.
    pub async fn download(
        &self,
        file_path: &str,
        max: u64,
    ) -> Result<(passerelle_sdk::http::Body, Option<u64>), ApiError> {
        if file_path.contains("..") || file_path.starts_with('/') {
            return Err(ApiError::Unexpected("file path not plain".into()));
        }
        let response = self
            .http
            .get(format!("{}/{file_path}", self.files))
            .timeout(self.timeout * 4)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ApiError::Api {
                code: i64::from(status),
                description: "file download refused".into(),
                retry_after: None,
                migrate_to: None,
            });
        }
        let len = response.content_length();
        if len.is_some_and(|n| n > max) {
            return Err(ApiError::Unexpected(
                "file larger than max_upload_bytes".into(),
            ));
        }
        // Passed on as it comes, never held whole; cut short past `max`.
        let chunks = futures::StreamExt::map(response.bytes_stream(), |c| {
            c.map_err(std::io::Error::other)
        });
        Ok((passerelle_sdk::http::Body::capped(chunks, max), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_errors_are_read_as_documented() {
        assert_eq!(
            answer(200, br#"{"ok":true,"result":{"id":1}}"#),
            Ok(serde_json::json!({"id": 1}))
        );
        let flood = answer(
            429,
            br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#,
        )
        .unwrap_err();
        assert_eq!(
            flood.to_send_error(),
            SendError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let migrated = answer(
            400,
            br#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001234567890}}"#,
        )
        .unwrap_err();
        assert!(matches!(
            migrated,
            ApiError::Api {
                migrate_to: Some(-1001234567890),
                ..
            }
        ));
        let auth = answer(
            401,
            br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
        )
        .unwrap_err();
        assert!(auth.is_auth());
        let gone = answer(
            403,
            br#"{"ok":false,"error_code":403,"description":"Forbidden: bot was kicked from the group chat"}"#,
        )
        .unwrap_err();
        assert_eq!(gone.to_send_error(), SendError::RoomNotFound);
        assert!(matches!(
            answer(502, b"<html>"),
            Err(ApiError::Unreachable(_))
        ));
    }
}
