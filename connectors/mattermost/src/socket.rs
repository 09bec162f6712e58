//! The WebSocket (`/api/v4/websocket`), spoken directly on tokio-tungstenite.
//!
//! - After connecting, `{"seq": 1, "action": "authentication_challenge", "data": {"token"}}`;
//!   the server answers `{"status": "OK", "seq_reply": 1}` and sends `hello`.
//! - Events carry the connection's `seq`, counting up from 0. A jump (the server drops events for
//!   a client that reads too slowly) and every new connection are gaps: each room's posts since
//!   the last one stored are read with `GET /channels/{id}/posts?since=` ([`catch_up`]), up to
//!   `catch_up_posts`; the daemon drops what it had already by the post ids.
//! - Events are taken in order, each stored before the next is read.
//! - A ping every 30 s; nothing heard for 90 s is a lost connection; lost connections are opened
//!   again after 1 s doubling to 60 s, with jitter. A 401 at the challenge ends the account.

use crate::api::Api;
use crate::inbound::{Incoming, Intake, frame, seen_key};
use futures::{SinkExt, StreamExt};
use passerelle_sdk::{
    CancellationToken, ConnectionState, ConnectorError, EmitError, StatusReporter,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The largest frame taken.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
const PING_EVERY: Duration = Duration::from_secs(30);
const SILENCE: Duration = Duration::from_secs(90);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

enum End {
    Stop,
    Lost(String),
    Fatal(ConnectorError),
}

/// The WebSocket client of one account.
pub struct Socket {
    /// REST (the catch-up).
    pub api: Api,
    /// `ws(s)://…/api/v4/websocket`.
    pub url: String,
    /// Where events go.
    pub intake: Arc<Intake>,
    /// Connection state.
    pub status: StatusReporter,
    /// Posts read per room after a gap.
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
            self.status.set(ConnectionState::Connecting);
            let started = Instant::now();
            match self.connection(tls.clone(), &stop).await {
                End::Stop => return Ok(()),
                End::Fatal(e) => return Err(e),
                End::Lost(why) => {
                    if started.elapsed() > MAX_BACKOFF {
                        backoff = Duration::from_secs(1);
                    }
                    self.status.set(ConnectionState::Disconnected);
                    let wait = jitter(backoff);
                    tracing::warn!(account = %self.account, reason = %why, retry_in_ms = wait.as_millis() as u64, "Mattermost WebSocket lost");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connection(&self, tls: Arc<rustls::ClientConfig>, stop: &CancellationToken) -> End {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            self.url.as_str(),
            Some(config),
            false,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        );
        let mut ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                return End::Lost(format!(
                    "WebSocket: {}",
                    e.to_string().chars().take(120).collect::<String>()
                ));
            }
            Err(_) => return End::Lost("WebSocket: no answer".into()),
        };
        let challenge = json!({"seq": 1, "action": "authentication_challenge", "data": {"token": self.api.token().expose()}});
        if ws
            .send(Message::Text(challenge.to_string().into()))
            .await
            .is_err()
        {
            return End::Lost("challenge not sent".into());
        }
        let mut last_seq: Option<u64> = None;
        let mut last_heard = Instant::now();
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
                        return End::Lost("nothing heard for 90 s".into());
                    }
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return End::Lost("ping not sent".into());
                    }
                    continue;
                }
                next = ws.next() => next,
            };
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => {
                    return End::Lost("closed by the server".into());
                }
                Some(Ok(_)) => {
                    last_heard = Instant::now();
                    continue;
                }
                Some(Err(e)) => {
                    return End::Lost(format!(
                        "WebSocket: {}",
                        e.to_string().chars().take(120).collect::<String>()
                    ));
                }
            };
            last_heard = Instant::now();
            let reply: Option<Value> = serde_json::from_str(text.as_str())
                .ok()
                .filter(|v: &Value| v.get("seq_reply").is_some());
            if let Some(reply) = reply {
                if reply.get("status").and_then(Value::as_str) != Some("OK") {
                    let code = reply
                        .pointer("/error/id")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if code.contains("authenticat")
                        || code.contains("session")
                        || code.contains("token")
                    {
                        return End::Fatal(ConnectorError::AuthRejected(format!(
                            "Mattermost refused the token at the WebSocket ({code})"
                        )));
                    }
                }
                continue;
            }
            let Some((seq, incoming)) = frame(text.as_str()) else {
                tracing::info!(account = %self.account, "a WebSocket frame that is not Mattermost's was ignored");
                continue;
            };
            let hello = text.as_str().contains("\"event\":\"hello\"");
            let gap = match (seq, last_seq) {
                (Some(s), Some(l)) => s > l + 1,
                _ => false,
            };
            if let Some(s) = seq {
                last_seq = Some(s);
            }
            if hello {
                self.status.set(ConnectionState::Connected);
                tracing::info!(account = %self.account, "Mattermost WebSocket connected");
            }
            if hello || gap {
                if gap {
                    tracing::warn!(account = %self.account, "Mattermost skipped events; reading what was missed");
                }
                if let Err(EmitError::ShuttingDown) =
                    catch_up(&self.api, &self.intake, self.catch_up).await
                {
                    return End::Stop;
                }
            }
            if let Some(incoming) = incoming {
                match self.intake.take(incoming).await {
                    Ok(()) => {}
                    Err(EmitError::ShuttingDown) => return End::Stop,
                    Err(e) => {
                        tracing::warn!(account = %self.account, error = %e, "a Mattermost event was not stored; it is read again after the next gap")
                    }
                }
            }
        }
    }
}

/// Reads each room's posts since the last one stored (at most `limit` per room, oldest first)
/// and takes the new ones; the daemon drops what it had already.
pub async fn catch_up(api: &Api, intake: &Intake, limit: u32) -> Result<(), EmitError> {
    if limit == 0 {
        return Ok(());
    }
    for channel in intake.dir.channels() {
        let Ok(Some(last)) = intake.state.get_text(&seen_key(&channel)).await else {
            continue;
        };
        let Ok(since) = last.parse::<u64>() else {
            continue;
        };
        let page = match api
            .get(&format!("channels/{channel}/posts?since={since}"))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Mattermost posts not read; what was said meanwhile may be missing");
                continue;
            }
        };
        let mut posts: Vec<Value> = page
            .get("posts")
            .and_then(Value::as_object)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        posts.retain(|p| {
            p.get("create_at")
                .and_then(Value::as_u64)
                .is_some_and(|c| c > since)
                && p.get("delete_at").and_then(Value::as_u64).unwrap_or(0) == 0
        });
        posts.sort_by_key(|p| p.get("create_at").and_then(Value::as_u64).unwrap_or(0));
        posts.truncate(limit as usize);
        let count = posts.len();
        for p in posts {
            intake.take(Incoming::Post(p)).await?;
        }
        if count > 0 {
            tracing::info!(posts = count, "Mattermost posts read after a gap");
        }
    }
    Ok(())
}
