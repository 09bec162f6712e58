//! signal-cli's HTTP daemon: JSON-RPC 2.0 calls (`POST /api/v1/rpc`), the event stream
//! (`GET /api/v1/events`, server-sent events `id:`/`event:receive`/`data:` with the received
//! message as JSON, a `:` keep-alive every 15 s, and replay after `Last-Event-ID`), and the
//! health check (`GET /api/v1/check`).
//!
//! Errors: the JSON-RPC codes (-32700…-32603) and signal-cli's own: -1 a user error (an unknown
//! group, an unregistered number…), -3 an I/O error (Signal's servers unreachable), -4 an untrusted
//! identity key, -5 rate limited (unverified: the code of signal-cli's rate-limit exception; the
//! per-recipient `RATE_LIMIT_FAILURE` result is also read).

use passerelle_sdk::SendError;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a call failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// signal-cli could not be reached, or answered something that is not JSON-RPC.
    #[error("signal-cli unreachable: {0}")]
    Unreachable(String),
    /// A JSON-RPC error.
    #[error("signal-cli error {code}: {message}")]
    Call {
        /// The error code.
        code: i64,
        /// Its message (signal-cli's words; may name a number or group, never message text).
        message: String,
        /// Seconds to wait, when signal-cli said.
        retry_after: Option<u64>,
    },
}

impl RpcError {
    /// The typed send error.
    pub fn to_send_error(&self) -> SendError {
        match self {
            Self::Unreachable(_) => SendError::Disconnected,
            Self::Call {
                code, retry_after, ..
            } => match code {
                -5 => SendError::RateLimited {
                    retry_after: Duration::from_secs(retry_after.unwrap_or(60)),
                },
                -3 | -32603 => SendError::Disconnected,
                -4 => SendError::Rejected(
                    "the recipient's safety number changed; trust it with signal-cli first".into(),
                ),
                _ => SendError::Rejected(format!("signal-cli error {code}")),
            },
        }
    }
}

/// The failure of a send whose call succeeded but whose recipients all failed.
pub fn results_error(result: &Value) -> Option<RpcError> {
    let results = result.get("results")?.as_array()?;
    if results.is_empty()
        || results
            .iter()
            .any(|r| r.get("type").and_then(Value::as_str) == Some("SUCCESS"))
    {
        return None;
    }
    let kinds: Vec<&str> = results
        .iter()
        .filter_map(|r| r.get("type").and_then(Value::as_str))
        .collect();
    let retry_after = results
        .iter()
        .filter_map(|r| r.get("retryAfterSeconds").and_then(Value::as_u64))
        .max();
    let code = if kinds.contains(&"RATE_LIMIT_FAILURE") {
        -5
    } else if kinds.contains(&"NETWORK_FAILURE") {
        -3
    } else if kinds.contains(&"IDENTITY_FAILURE") {
        -4
    } else {
        -1
    };
    Some(RpcError::Call {
        code,
        message: format!("no recipient accepted the message ({})", kinds.join(", ")),
        retry_after,
    })
}

fn unreachable(e: reqwest::Error) -> RpcError {
    RpcError::Unreachable(e.without_url().to_string())
}

/// A client of one signal-cli daemon.
#[derive(Debug)]
pub struct Rpc {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    next_id: AtomicU64,
}

impl Rpc {
    /// A client of the daemon at `base`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.to_owned(),
            timeout,
            next_id: AtomicU64::new(1),
        })
    }

    /// `GET /api/v1/check`.
    pub async fn check(&self) -> Result<(), RpcError> {
        let r = self
            .http
            .get(format!("{}/api/v1/check", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(RpcError::Unreachable(format!(
                "check answered {}",
                r.status()
            )))
        }
    }

    /// Calls `method` with `params`; its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let r = self
            .http
            .post(format!("{}/api/v1/rpc", self.base))
            .timeout(self.timeout)
            .json(&request)
            .send()
            .await
            .map_err(unreachable)?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(unreachable)?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| RpcError::Unreachable(format!("HTTP {status}, not a JSON-RPC answer")))?;
        if let Some(e) = v.get("error") {
            let retry_after = e
                .pointer("/data/response/results")
                .and_then(Value::as_array)
                .and_then(|rs| {
                    rs.iter()
                        .filter_map(|r| r.get("retryAfterSeconds").and_then(Value::as_u64))
                        .max()
                });
            return Err(RpcError::Call {
                code: e.get("code").and_then(Value::as_i64).unwrap_or(-32603),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
                retry_after,
            });
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| RpcError::Unreachable("answer without result or error".into()))
    }

    /// Opens the event stream, asking for the events after `last_id`.
    pub async fn events(&self, last_id: Option<&str>) -> Result<reqwest::Response, RpcError> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/events", self.base))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await.map_err(unreachable)?;
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(RpcError::Unreachable(format!(
                "events answered {}",
                r.status()
            )))
        }
    }
}

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Splits a byte stream into server-sent events (the WHATWG rules this stream needs: `field:value`
/// lines, an optional space after the colon, `:` comments, a blank line ends an event).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

/// The most a single event may hold before the stream is judged broken.
const MAX_EVENT: usize = 64 * 1024 * 1024;

impl SseParser {
    /// Feeds bytes; the events they complete. `Err` when one event grows past the limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data || self.current.id.is_some() {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (text.into_owned(), String::new()),
            };
            match field.as_str() {
                "id" => self.current.id = Some(value),
                "event" => self.current.event = Some(value),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        if self.buf.len() + self.current.data.len() > MAX_EVENT {
            return Err("an event larger than 64 MiB".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_as_signal_cli_writes_them() {
        let mut p = SseParser::default();
        let got = p
            .feed(b":\nid:1700000000000-1\nevent:receive\ndata:{\"a\":1}\n\nid:1700000000000-2\r\nevent: rec")
            .unwrap();
        assert_eq!(
            got,
            vec![SseEvent {
                id: Some("1700000000000-1".into()),
                event: Some("receive".into()),
                data: "{\"a\":1}".into()
            }]
        );
        let got = p.feed(b"eive\r\ndata:x\ndata:y\n\n").unwrap();
        assert_eq!(got[0].event.as_deref(), Some("receive"));
        assert_eq!(got[0].data, "x\ny");
    }

    #[test]
    fn failed_recipients_are_errors() {
        let ok =
            json!({"timestamp": 1, "results": [{"type": "SUCCESS"}, {"type": "NETWORK_FAILURE"}]});
        assert_eq!(results_error(&ok), None);
        let limited = json!({"timestamp": 1, "results": [{"type": "RATE_LIMIT_FAILURE", "retryAfterSeconds": 9}]});
        assert_eq!(
            results_error(&limited).unwrap().to_send_error(),
            SendError::RateLimited {
                retry_after: Duration::from_secs(9)
            }
        );
        let unregistered = json!({"timestamp": 1, "results": [{"type": "UNREGISTERED_FAILURE"}]});
        assert!(matches!(
            results_error(&unregistered).unwrap().to_send_error(),
            SendError::Rejected(_)
        ));
    }
}
