//! The Graph API client the three kinds share, and the Graph error shape
//! (`{"error":{"message","type","code","error_subcode","fbtrace_id"}}`) mapped to typed errors.
//!
//! The token goes in the `Authorization: Bearer` header, never in a URL, so no error or log line
//! can carry it; transport errors are reported without their URL.

use passerelle_sdk::{Secret, SendError};
use serde_json::Value;
use std::time::Duration;

/// What a Graph call failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// No answer (connection, timeout) or a 5xx without an error body: worth retrying.
    #[error("Graph API unreachable: {0}")]
    Unreachable(String),
    /// The API answered with its error shape.
    #[error("Graph API error {code}/{subcode} ({kind}, HTTP {status}, trace {trace})")]
    Api {
        /// HTTP status.
        status: u16,
        /// `error.code`.
        code: i64,
        /// `error.error_subcode`, 0 when absent.
        subcode: i64,
        /// `error.type`, e.g. `OAuthException`.
        kind: String,
        /// `error.fbtrace_id`, for Meta's support.
        trace: String,
        /// How long the API asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// A success status with a body that is not what the API documents.
    #[error("Graph API answer not understood: {0}")]
    Unexpected(String),
}

/// Throttling codes (Graph: 4 app, 17 user, 32 page, 613 call rate, 80001–80014 business use
/// case; WhatsApp: 130429 throughput, 131048 spam rate, 131056 pair rate).
fn throttled(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613 | 130429 | 131048 | 131056) || (80001..=80014).contains(&code)
}

/// Whether the error says the 24-hour customer-service window is closed: WhatsApp's 131047
/// ("re-engagement message"), Messenger's and Instagram's code 10 with subcode 2018278 ("sent
/// outside of allowed window").
fn window_closed(code: i64, subcode: i64) -> bool {
    code == 131047 || (code == 10 && subcode == 2018278)
}

impl GraphError {
    /// Whether the token itself was refused (code 190, or 102 for a session): retrying with the
    /// same token can't help, the account must stop until it is replaced.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::Api {
                code: 190 | 102,
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
                status,
                code,
                subcode,
                retry_after,
                ..
            } => {
                if window_closed(*code, *subcode) {
                    return SendError::WindowClosed(format!(
                        "Meta allows free-form messages only within 24 hours of the person's \
                         last message (error {code}/{subcode})"
                    ));
                }
                if throttled(*code) || *status == 429 {
                    let default = if *code == 131056 { 6 } else { 60 };
                    return SendError::RateLimited {
                        retry_after: retry_after.unwrap_or(Duration::from_secs(default)),
                    };
                }
                if self.is_auth() || *status >= 500 || matches!(code, 1 | 2) {
                    // 1 unknown and 2 service errors are temporary; an auth failure stops the
                    // account and the daemon keeps the message queued.
                    return SendError::Disconnected;
                }
                SendError::Rejected(format!("Graph API error {code}/{subcode}"))
            }
        }
    }
}

/// Reads how long to wait from `Retry-After` (seconds) or Meta's business-use-case usage header
/// (`estimated_time_to_regain_access`, in minutes).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(secs) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    let usage: Value = headers
        .get("x-business-use-case-usage")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes.saturating_mul(60)))
}

/// Reads a Graph error body; `None` when it is not one.
fn parse_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Option<GraphError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    Some(GraphError::Api {
        status,
        code: e.get("code")?.as_i64()?,
        subcode: e.get("error_subcode").and_then(Value::as_i64).unwrap_or(0),
        kind: e
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(64)
            .collect(),
        trace: e
            .get("fbtrace_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(64)
            .collect(),
        retry_after: retry_after(headers),
    })
}

/// One account's Graph API client.
#[derive(Clone)]
pub struct Graph {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("base", &self.base).finish()
    }
}

fn unreachable(e: reqwest::Error) -> GraphError {
    GraphError::Unreachable(e.without_url().to_string())
}

impl Graph {
    /// A client for `base` (with version, no trailing `/`) calling with `token`.
    pub fn new(base: &str, token: Secret, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.to_owned(),
            token,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn finish(&self, request: reqwest::RequestBuilder) -> Result<Value, GraphError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|_| GraphError::Unexpected(format!("HTTP {status} body is not JSON")));
        }
        match parse_error(status, &headers, &body) {
            Some(e) => Err(e),
            None if status >= 500 || status == 429 => {
                Err(GraphError::Unreachable(format!("HTTP {status}")))
            }
            None => Err(GraphError::Unexpected(format!(
                "HTTP {status} without an error body"
            ))),
        }
    }

    /// `GET {base}/{path}`.
    pub async fn get(&self, path: &str) -> Result<Value, GraphError> {
        self.finish(self.http.get(format!("{}/{path}", self.base)))
            .await
    }

    /// `POST {base}/{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, GraphError> {
        self.finish(self.http.post(format!("{}/{path}", self.base)).json(body))
            .await
    }

    /// `POST {base}/{path}` with a multipart form.
    pub async fn post_form(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Result<Value, GraphError> {
        self.finish(
            self.http
                .post(format!("{}/{path}", self.base))
                .multipart(form),
        )
        .await
    }

    /// Whether the token may be sent to `url`: an `https` URL, or one on the API base's own
    /// origin (a loopback base in tests).
    pub fn may_carry_token(&self, url: &str) -> bool {
        let (Ok(u), Ok(b)) = (reqwest::Url::parse(url), reqwest::Url::parse(&self.base)) else {
            return false;
        };
        u.scheme() == "https" || u.origin() == b.origin()
    }

    /// Downloads `url` with the token (WhatsApp's media URLs need it), at most `max` bytes.
    /// Returns the bytes and the server's content type.
    pub async fn download(
        &self,
        url: &str,
        max: u64,
    ) -> Result<passerelle_sdk::signed_link::File, GraphError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            return Err(parse_error(status, &headers, &body).unwrap_or_else(|| {
                GraphError::Unexpected(format!("download answered HTTP {status}"))
            }));
        }
        let len = response.content_length();
        if len.is_some_and(|n| n > max) {
            return Err(GraphError::Unexpected(
                "file larger than max_upload_bytes".into(),
            ));
        }
        let mime = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| "application/octet-stream".into());
        // Passed on as it comes, never held whole; cut short past `max`.
        let chunks = futures::StreamExt::map(response.bytes_stream(), |c| {
            c.map_err(std::io::Error::other)
        });
        Ok(passerelle_sdk::signed_link::File {
            body: passerelle_sdk::http::Body::capped(chunks, max),
            mime,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn err(status: u16, body: &str, headers: HeaderMap) -> GraphError {
        parse_error(status, &headers, body.as_bytes()).unwrap()
    }

    #[test]
    fn graph_errors_map_to_typed_send_errors() {
        let h = HeaderMap::new();
        let window = err(
            400,
            r#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam"}}"#,
            h.clone(),
        );
        assert!(matches!(window.to_send_error(), SendError::WindowClosed(_)));
        let messenger_window = err(
            400,
            r#"{"error":{"message":"(#10) This message is sent outside of allowed window.","type":"OAuthException","code":10,"error_subcode":2018278,"fbtrace_id":"x"}}"#,
            h.clone(),
        );
        assert!(matches!(
            messenger_window.to_send_error(),
            SendError::WindowClosed(_)
        ));
        let throughput = err(
            400,
            r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"fbtrace_id":"x"}}"#,
            h.clone(),
        );
        assert_eq!(
            throughput.to_send_error(),
            SendError::RateLimited {
                retry_after: Duration::from_secs(60)
            }
        );
        let mut usage = HeaderMap::new();
        usage.insert(
            "x-business-use-case-usage",
            HeaderValue::from_static(r#"{"1234":[{"type":"messenger","call_count":100,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":3}]}"#),
        );
        let page = err(
            400,
            r#"{"error":{"message":"(#32) Page request limit reached","type":"OAuthException","code":32,"fbtrace_id":"x"}}"#,
            usage,
        );
        assert_eq!(
            page.to_send_error(),
            SendError::RateLimited {
                retry_after: Duration::from_secs(180)
            }
        );
        let mut after = HeaderMap::new();
        after.insert("retry-after", HeaderValue::from_static("7"));
        let pair = err(
            400,
            r#"{"error":{"code":131056,"type":"OAuthException"}}"#,
            after,
        );
        assert_eq!(
            pair.to_send_error(),
            SendError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let token = err(
            401,
            r#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"x"}}"#,
            h.clone(),
        );
        assert!(token.is_auth());
        assert_eq!(token.to_send_error(), SendError::Disconnected);
        let param = err(
            400,
            r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"fbtrace_id":"x"}}"#,
            h.clone(),
        );
        assert_eq!(
            param.to_send_error(),
            SendError::Rejected("Graph API error 100/0".into())
        );
        assert!(parse_error(400, &h, b"<html>").is_none());
    }
}
