//! Socket Mode, spoken directly on tokio-tungstenite (slack-morphism's listener acknowledges on
//! its own schedule, may run several connections whose events interleave, and traces frames
//! with their text; see PROTOCOL.md).
//!
//! - `apps.connections.open` with the app token gives a one-use `wss://` URL; the first frame is
//!   `hello`.
//! - Each `events_api` envelope is taken in order and acknowledged (`{"envelope_id": …}`) only
//!   once its events are durably stored: an envelope not acknowledged (the daemon was killed, the
//!   store failed) is delivered again by Slack, and its copy is a duplicate the daemon drops.
//! - `disconnect` (`refresh_requested`, `warning`) opens a new connection at once; `link_disabled`
//!   (Socket Mode turned off for the app) ends the account with that cause.
//! - A ping every 20 s; nothing heard for 60 s is a lost connection. Lost connections are
//!   opened again with backoff (1 s doubling to 60 s, with jitter).
//! - After each `hello`, what Slack may have stopped redelivering (it retries three times, then
//!   drops) is read from each room's history since the last message stored, up to
//!   `catch_up_messages` ([`catch_up`]).

use crate::api::{Api, Tier};
use crate::inbound::{Incoming, Intake, seen_key, ts_order, valid_ts};
use futures::{SinkExt, StreamExt};
use passerelle_sdk::{
    CancellationToken, ConnectionState, ConnectorError, EmitError, StatusReporter,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The largest frame taken (Slack's envelopes are far smaller; a file-heavy message is a few KiB).
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENCE: Duration = Duration::from_secs(60);
const HELLO_WITHIN: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One Socket Mode frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `hello`.
    Hello,
    /// `disconnect`, with its reason.
    Disconnect(String),
    /// `events_api`: the envelope's id and its payload.
    Events {
        /// To acknowledge.
        envelope_id: String,
        /// The `event_callback`.
        payload: Value,
    },
    /// Another envelope (`slash_commands`, `interactive`): acknowledged, not bridged.
    Other(String),
}

/// Reads one text frame; `None` for what is not Slack's.
pub fn parse_frame(text: &str) -> Option<Frame> {
    if text.len() > MAX_FRAME {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    let envelope = || {
        v.get("envelope_id")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty() && e.len() <= 128)
            .map(str::to_owned)
    };
    match v.get("type").and_then(Value::as_str)? {
        "hello" => Some(Frame::Hello),
        "disconnect" => Some(Frame::Disconnect(
            v.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(64)
                .collect(),
        )),
        "events_api" => Some(Frame::Events {
            envelope_id: envelope()?,
            payload: v.get("payload")?.clone(),
        }),
        _ => envelope().map(Frame::Other),
    }
}

/// How a connection ended.
enum End {
    Stop,
    Refresh,
    Lost(String),
    Fatal(ConnectorError),
}

/// The Socket Mode client of one account.
pub struct Socket {
    /// The Web API (`apps.connections.open`, history).
    pub api: Api,
    /// Where events go.
    pub intake: Arc<Intake>,
    /// Connection state.
    pub status: StatusReporter,
    /// Messages read per room after a reconnect.
    pub catch_up: u32,
    /// For logs.
    pub account: String,
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2 + 1))
}

impl Socket {
    /// Runs until `stop`, or a fatal error.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ConnectorError> {
        let tls = passerelle_sdk::tls::client_config(None).map_err(ConnectorError::Fatal)?;
        let mut backoff = Duration::from_secs(1);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            self.status.set(ConnectionState::Connecting);
            let started = Instant::now();
            let end = match self.api.open_connection().await {
                Ok(url) => self.connection(&url, tls.clone(), &stop).await,
                Err(e) if e.is_auth() => {
                    return Err(ConnectorError::AuthRejected(format!(
                        "apps.connections.open refused the app token ({e}): check app_token and its connections:write scope"
                    )));
                }
                Err(e) => End::Lost(format!("apps.connections.open: {e}")),
            };
            match end {
                End::Stop => return Ok(()),
                End::Fatal(e) => return Err(e),
                End::Refresh => {
                    tracing::info!(account = %self.account, "Slack asked for a new connection");
                    backoff = Duration::from_secs(1);
                    continue;
                }
                End::Lost(why) => {
                    if started.elapsed() > MAX_BACKOFF {
                        backoff = Duration::from_secs(1);
                    }
                    self.status.set(ConnectionState::Disconnected);
                    let wait = jitter(backoff);
                    tracing::warn!(account = %self.account, reason = %why, retry_in_ms = wait.as_millis() as u64, "Slack connection lost");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connection(
        &self,
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        stop: &CancellationToken,
    ) -> End {
        let secure = url.starts_with("wss://");
        let loopback = url.starts_with("ws://127.0.0.1")
            || url.starts_with("ws://[::1]")
            || url.starts_with("ws://localhost");
        if !secure && !loopback {
            return End::Lost("apps.connections.open gave a URL that is not wss://".into());
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(config),
            false,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        );
        let mut ws = match tokio::time::timeout(HELLO_WITHIN, connect).await {
            Ok(Ok((ws, _))) => ws,
            // The URL holds a one-use ticket: never in a log.
            Ok(Err(e)) => return End::Lost(format!("WebSocket: {}", short(&e.to_string()))),
            Err(_) => return End::Lost("WebSocket: no answer".into()),
        };
        let mut hello = false;
        let mut last_heard = Instant::now();
        let opened = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return End::Stop;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > SILENCE {
                        return End::Lost("nothing heard for 60 s".into());
                    }
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return End::Lost("ping not sent".into());
                    }
                    continue;
                }
                next = ws.next() => next,
            };
            if !hello && opened.elapsed() > HELLO_WITHIN {
                return End::Lost("no hello".into());
            }
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => return End::Lost("closed by Slack".into()),
                Some(Ok(_)) => {
                    last_heard = Instant::now();
                    continue;
                }
                Some(Err(e)) => return End::Lost(format!("WebSocket: {}", short(&e.to_string()))),
            };
            last_heard = Instant::now();
            match parse_frame(text.as_str()) {
                Some(Frame::Hello) => {
                    hello = true;
                    self.status.set(ConnectionState::Connected);
                    tracing::info!(account = %self.account, "Slack Socket Mode connected");
                    if let Err(EmitError::ShuttingDown) =
                        catch_up(&self.api, &self.intake, self.catch_up).await
                    {
                        return End::Stop;
                    }
                }
                Some(Frame::Disconnect(reason)) if reason == "link_disabled" => {
                    return End::Fatal(ConnectorError::Fatal(
                        "Slack disabled Socket Mode for this app (disconnect: link_disabled): turn it on in the app's settings, or use mode = \"events\"".into(),
                    ));
                }
                Some(Frame::Disconnect(_)) => {
                    let _ = ws.close(None).await;
                    return End::Refresh;
                }
                Some(Frame::Events {
                    envelope_id,
                    payload,
                }) => match self.intake.take(&payload).await {
                    Ok(()) => {
                        let ack = json!({"envelope_id": envelope_id}).to_string();
                        if ws.send(Message::Text(ack.into())).await.is_err() {
                            return End::Lost("acknowledgement not sent".into());
                        }
                    }
                    // Not stored: not acknowledged, so Slack delivers it again.
                    Err(EmitError::ShuttingDown) => return End::Stop,
                    Err(e) => {
                        tracing::warn!(account = %self.account, error = %e, "a Slack event was not stored; Slack will deliver it again");
                    }
                },
                Some(Frame::Other(envelope_id)) => {
                    let ack = json!({"envelope_id": envelope_id}).to_string();
                    let _ = ws.send(Message::Text(ack.into())).await;
                }
                None => {
                    tracing::info!(account = %self.account, "a Socket Mode frame that is not Slack's was ignored")
                }
            }
        }
    }
}

/// An error's text, cut short and without any URL (which would carry the ticket).
fn short(e: &str) -> String {
    let cut: String = e.chars().take(120).collect();
    match cut.find("ws") {
        Some(at) if cut[at..].starts_with("wss://") || cut[at..].starts_with("ws://") => {
            cut[..at].to_owned()
        }
        _ => cut,
    }
}

/// Reads each room's history since the last message stored (at most `limit` per room, oldest
/// first) and takes what it finds; the daemon drops what it had already.
pub async fn catch_up(api: &Api, intake: &Intake, limit: u32) -> Result<(), EmitError> {
    if limit == 0 {
        return Ok(());
    }
    for (_, conversation) in intake.dir.conversations() {
        let Ok(Some(last)) = intake.state.get_text(&seen_key(&conversation)).await else {
            continue;
        };
        if !valid_ts(&last) {
            continue;
        }
        let mut found: Vec<Value> = Vec::new();
        let mut cursor = String::new();
        while found.len() < limit as usize {
            let mut params = vec![
                ("channel", conversation.clone()),
                ("oldest", last.clone()),
                ("inclusive", "false".to_owned()),
                ("limit", (limit as usize - found.len()).min(200).to_string()),
            ];
            if !cursor.is_empty() {
                params.push(("cursor", cursor.clone()));
            }
            let page = match api.get("conversations.history", &params, Tier::T2).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "Slack history not read; what was said meanwhile may be missing");
                    break;
                }
            };
            let messages = page
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            found.extend(messages);
            cursor = page
                .pointer("/response_metadata/next_cursor")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if cursor.is_empty() || page.get("has_more") != Some(&Value::Bool(true)) {
                break;
            }
        }
        found.sort_by_key(|m| {
            m.get("ts")
                .and_then(Value::as_str)
                .map(ts_order)
                .unwrap_or(0)
        });
        found.dedup_by(|a, b| a.get("ts") == b.get("ts"));
        let count = found.len();
        for m in found {
            let subtype = m.get("subtype").and_then(Value::as_str);
            if !matches!(
                subtype,
                None | Some("thread_broadcast" | "me_message" | "file_share" | "bot_message")
            ) {
                continue;
            }
            intake
                .take_incoming(Incoming::Message {
                    conversation: conversation.clone(),
                    message: m,
                })
                .await?;
        }
        if count > 0 {
            tracing::info!(messages = count, "Slack history read after a reconnect");
        }
    }
    Ok(())
}
