//! The Gateway connection: twilight's shard, in a task of its own so that heartbeats never wait
//! for a send.
//!
//! The shard identifies through a queue sized from `GET /gateway/bot`'s
//! `session_start_limit` (at most `max_concurrency` identifies per 5 s, none once `remaining`
//! is spent until `reset_after`), heartbeats, resumes after a drop at the session's
//! `resume_gateway_url` with its sequence, and follows `Reconnect` and `Invalid Session` by
//! itself, reconnecting with backoff. On shutdown the session is saved, so the next start
//! resumes it when Discord still has it. What resume could not cover (a new session after an
//! outage, a crash, a restart) is fetched from each room's history since the last message the
//! daemon stored, up to `catch_up_messages` per channel; the daemon drops what it already has by
//! its id. Close codes that reconnecting can't mend (4004 bad token, 4013/4014 intents) end the
//! account.

use crate::directory::Directory;
use crate::inbound::{self, Outcome};
use crate::outbound;
use crate::rest::{Rest, snowflake};
use futures::StreamExt;
use passerelle_sdk::{
    CancellationToken, ConnectionState, ConnectorError, Emitter, StateHandle, StatusReporter, state,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use twilight_gateway::{CloseFrame, ConfigBuilder, Intents, Message, Session, Shard, ShardId};

/// The state key of the session saved at shutdown.
const SESSION: &str = "session";
/// How often the last message seen in each room is saved: after a crash, the catch-up reads
/// again at most this much (the daemon drops what it has by id).
const SEEN_EVERY: Duration = Duration::from_secs(1);

/// The intents asked for: guilds, their messages and reactions, direct messages and their
/// reactions, and message content (privileged: enable it on the bot's page).
pub fn intents() -> Intents {
    Intents::GUILDS
        | Intents::GUILD_MESSAGES
        | Intents::GUILD_MESSAGE_REACTIONS
        | Intents::DIRECT_MESSAGES
        | Intents::DIRECT_MESSAGE_REACTIONS
        | Intents::MESSAGE_CONTENT
}

/// What the Gateway task needs.
pub struct Gateway {
    /// REST, for the gateway's URL, lookups and catch-up.
    pub rest: Rest,
    /// The directory.
    pub dir: Arc<Directory>,
    /// The sender (the catch-up finds the webhooks first, to know its own).
    pub sender: Arc<outbound::Sender>,
    /// The daemon's side.
    pub emitter: Emitter,
    /// Connector state.
    pub state: StateHandle,
    /// Connection state.
    pub status: StatusReporter,
    /// The account, for logs.
    pub account: String,
}

fn seen_key(channel: u64) -> String {
    state::key(&["seen", &channel.to_string()])
}

impl Gateway {
    /// Runs until `stop`; an error that reconnecting can't mend goes to `fatal`.
    pub async fn run(
        self,
        stop: CancellationToken,
        fatal: tokio::sync::mpsc::Sender<ConnectorError>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Work>(1024);
        let worker = tokio::spawn(
            Worker {
                rest: self.rest.clone(),
                dir: self.dir.clone(),
                sender: self.sender.clone(),
                emitter: self.emitter.clone(),
                state: self.state.clone(),
                account: self.account.clone(),
            }
            .run(rx),
        );
        let result = self.session(&stop, &tx).await;
        drop(tx);
        // What was queued is emitted before the task ends (the daemon takes it until it stops).
        let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
        if let Err(e) = result {
            let _ = fatal.send(e).await;
        }
    }

    async fn session(
        &self,
        stop: &CancellationToken,
        work: &tokio::sync::mpsc::Sender<Work>,
    ) -> Result<(), ConnectorError> {
        let info = match self.rest.get("gateway/bot").await {
            Ok(v) => v,
            Err(crate::rest::RestError::Unauthorized) => {
                return Err(ConnectorError::AuthRejected(
                    "Discord refused the bot token".into(),
                ));
            }
            Err(e) => {
                return Err(ConnectorError::Disconnected(format!(
                    "GET /gateway/bot: {e}"
                )));
            }
        };
        let url = match &self.sender.settings.gateway_url {
            Some(u) => u.clone(),
            None => info
                .get("url")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("wss://"))
                .unwrap_or("wss://gateway.discord.gg")
                .to_owned(),
        };
        let limit = info.get("session_start_limit");
        let num = |k: &str, d: u64| {
            limit
                .and_then(|l| l.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(d)
        };
        let (total, remaining, reset_after, concurrency) = (
            num("total", 1000),
            num("remaining", 1000),
            num("reset_after", 0),
            num("max_concurrency", 1),
        );
        if remaining == 0 {
            tracing::warn!(account = %self.account, reset_after_ms = reset_after, "Discord allows no new session before its daily limit resets; waiting");
        }
        let queue = twilight_gateway::queue::InMemoryQueue::new(
            concurrency.clamp(1, 64) as u16,
            remaining.min(u64::from(u32::MAX)) as u32,
            Duration::from_millis(reset_after),
            total.min(u64::from(u32::MAX)) as u32,
        );
        let mut config =
            ConfigBuilder::new(self.sender.settings.token.expose().to_owned(), intents())
                .proxy_url(url)
                .queue(queue);
        if let Ok(Some(saved)) = self.state.get(SESSION).await
            && let Ok(saved) = serde_json::from_slice::<Value>(&saved)
            && let (Some(id), Some(seq), Some(resume)) = (
                saved.get("id").and_then(Value::as_str),
                saved.get("seq").and_then(Value::as_u64),
                saved.get("resume_url").and_then(Value::as_str),
            )
        {
            tracing::info!(account = %self.account, "resuming the session saved at the last shutdown");
            config = config
                .session(Session::new(seq, id.to_owned()))
                .resume_url(resume.to_owned());
        }
        // A saved session is good for one try: a crash later must not resume a stale one.
        let _ = self.state.delete(SESSION).await;
        let mut shard = Shard::with_config(ShardId::ONE, config.build());
        let mut last_close: Option<u16> = None;
        let mut flush = tokio::time::interval(SEEN_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    let saved = saved_session(&shard);
                    self.save(saved).await;
                    shard.close(CloseFrame::RESUME);
                    // Let the close frame out.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(m) = shard.next().await {
                            if matches!(m, Ok(Message::Close(_))) { break; }
                        }
                    }).await;
                    self.flush().await;
                    return Ok(());
                }
                _ = flush.tick() => { self.flush().await; continue; }
                next = shard.next() => next,
            };
            match next {
                None => {
                    self.flush().await;
                    return Err(closed_for_good(last_close));
                }
                Some(Err(e)) => {
                    tracing::warn!(account = %self.account, error = %e, "Gateway connection trouble; the shard reconnects");
                    self.status.set(ConnectionState::Connecting);
                }
                Some(Ok(Message::Close(frame))) => {
                    last_close = frame.as_ref().map(|f| f.code);
                    tracing::info!(account = %self.account, code = ?last_close, "Gateway closed; reconnecting");
                    self.status.set(ConnectionState::Connecting);
                }
                Some(Ok(Message::Text(json))) => self.frame(&json, work).await,
            }
        }
    }

    async fn save(&self, saved: Option<Value>) {
        if let Some(saved) = saved
            && let Err(e) = self.state.put(SESSION, saved.to_string()).await
        {
            tracing::warn!(account = %self.account, error = %e, "the session was not saved; the next start begins a new one");
        }
    }

    async fn flush(&self) {
        for (channel, message) in self.dir.take_dirty() {
            if let Err(e) = self
                .state
                .put(&seen_key(channel), message.to_string())
                .await
            {
                tracing::warn!(account = %self.account, error = %e, "last seen message not saved; the next catch-up fetches a little more (and the daemon drops what it has)");
            }
        }
    }

    async fn frame(&self, json: &str, work: &tokio::sync::mpsc::Sender<Work>) {
        let Some((t, d)) = inbound::frame(json) else {
            return;
        };
        let item = match t.as_str() {
            "READY" => {
                let user = d.get("user").and_then(|u| snowflake(u, "id")).unwrap_or(0);
                let app = d
                    .get("application")
                    .and_then(|a| snowflake(a, "id"))
                    .unwrap_or(0);
                self.dir.set_me(user, app);
                self.status.set(ConnectionState::Connected);
                tracing::info!(account = %self.account, "Discord session ready");
                // A new session: what was said since the last message stored comes first.
                Work::CatchUp
            }
            "RESUMED" => {
                self.status.set(ConnectionState::Connected);
                tracing::info!(account = %self.account, "Discord session resumed");
                return;
            }
            _ => Work::Dispatch(t, d),
        };
        // Bounded: when the daemon stores slowly, the shard waits here (and Discord's buffer
        // for the session holds the rest).
        let _ = work.send(item).await;
    }
}

/// What the worker does, in order.
enum Work {
    /// Fetch each room's history since the last message stored.
    CatchUp,
    /// Translate and emit one dispatch.
    Dispatch(String, Value),
}

/// Emits in order what the Gateway gave: a catch-up before the dispatches after it.
struct Worker {
    rest: Rest,
    dir: Arc<Directory>,
    sender: Arc<outbound::Sender>,
    emitter: Emitter,
    state: StateHandle,
    account: String,
}

impl Worker {
    async fn run(self, mut rx: tokio::sync::mpsc::Receiver<Work>) {
        while let Some(work) = rx.recv().await {
            match work {
                Work::CatchUp => {
                    CatchUp {
                        rest: self.rest.clone(),
                        dir: self.dir.clone(),
                        sender: self.sender.clone(),
                        emitter: self.emitter.clone(),
                        state: self.state.clone(),
                        account: self.account.clone(),
                    }
                    .run()
                    .await
                }
                Work::Dispatch(t, d) => {
                    let mut out = inbound::dispatch(&t, &d, &self.dir);
                    if let Some(channel) = out.unknown_channel {
                        lookup(&self.rest, &self.dir, channel).await;
                        out = inbound::dispatch(&t, &d, &self.dir);
                    }
                    emit(&self.emitter, &self.dir, out, &self.account).await;
                }
            }
        }
    }
}

/// Looks a channel up once (a thread's parent, a direct message's person).
async fn lookup(rest: &Rest, dir: &Directory, channel: u64) {
    dir.mark_looked_up(channel);
    match rest.get(&format!("channels/{channel}")).await {
        Ok(c) => dir.learn_channel(&c),
        Err(e) => tracing::debug!(channel, error = %e, "channel not readable"),
    }
}

async fn emit(emitter: &Emitter, dir: &Directory, out: Outcome, account: &str) {
    let count = out.events.len();
    for event in out.events {
        if let Err(e) = emitter.emit(event).await {
            tracing::warn!(account, error = %e, "an inbound Discord event was not stored");
            return;
        }
    }
    if count > 0
        && let Some((channel, message)) = out.seen
    {
        dir.saw(channel, message);
    }
}

/// What resuming the shard's session takes, if it has one.
fn saved_session(shard: &Shard) -> Option<Value> {
    let (session, url) = (shard.session()?, shard.resume_url()?);
    Some(json!({"id": session.id(), "seq": session.sequence(), "resume_url": url}))
}

fn closed_for_good(code: Option<u16>) -> ConnectorError {
    match code {
        Some(4004) => ConnectorError::AuthRejected("Discord refused the bot token (4004)".into()),
        Some(4013) | Some(4014) => ConnectorError::Fatal(
            "Discord refused the intents (4013/4014): enable the Message Content intent on the bot's page in the Developer Portal".into(),
        ),
        Some(c) => ConnectorError::Fatal(format!("Discord closed the Gateway for good ({c})")),
        None => ConnectorError::Disconnected("the Gateway connection ended".into()),
    }
}

/// Fetches what each room said since the last message the daemon stored.
struct CatchUp {
    rest: Rest,
    dir: Arc<Directory>,
    sender: Arc<outbound::Sender>,
    emitter: Emitter,
    state: StateHandle,
    account: String,
}

impl CatchUp {
    async fn run(self) {
        let cap = self.sender.settings.catch_up;
        for channel in self.dir.room_channels() {
            if !self.dir.looked_up(channel) {
                lookup(&self.rest, &self.dir, channel).await;
            }
            // Know this bot's webhooks before reading history, so its own messages stay out.
            if self.sender.settings.webhooks {
                self.sender.prepare(channel).await;
            }
            let after = match self.dir.seen(channel) {
                Some(a) => a,
                None => match self.state.get_text(&seen_key(channel)).await {
                    Ok(Some(s)) if s.parse::<u64>().is_ok() => {
                        let a = s.parse().unwrap_or(0);
                        self.dir.load_seen(channel, a);
                        a
                    }
                    _ => {
                        // The first session: nothing to catch up on; start from the newest.
                        self.baseline(channel).await;
                        continue;
                    }
                },
            };
            if cap == 0 {
                continue;
            }
            self.fetch_since(channel, after, cap).await;
        }
        // Saved at once: a crash right after the first start must still know where to begin.
        for (channel, message) in self.dir.take_dirty() {
            if let Err(e) = self
                .state
                .put(&seen_key(channel), message.to_string())
                .await
            {
                tracing::warn!(account = %self.account, error = %e, "last seen message not saved");
            }
        }
    }

    async fn baseline(&self, channel: u64) {
        if let Ok(Value::Array(newest)) = self
            .rest
            .get(&format!("channels/{channel}/messages?limit=1"))
            .await
            && let Some(id) = newest.first().and_then(|m| snowflake(m, "id"))
        {
            self.dir.saw(channel, id);
        }
    }

    async fn fetch_since(&self, channel: u64, mut after: u64, cap: u32) {
        let mut left = cap;
        let mut fetched = 0u32;
        while left > 0 {
            let limit = left.min(100);
            let page = match self
                .rest
                .get(&format!(
                    "channels/{channel}/messages?after={after}&limit={limit}"
                ))
                .await
            {
                Ok(Value::Array(p)) => p,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(account = %self.account, channel, error = %e, "history not readable; what was said during the gap is not bridged");
                    break;
                }
            };
            let mut page: Vec<(u64, Value)> = page
                .into_iter()
                .filter_map(|m| Some((snowflake(&m, "id")?, m)))
                .filter(|(id, _)| *id > after)
                .collect();
            page.sort_by_key(|(id, _)| *id);
            let full = page.len() as u32 >= limit;
            for (id, m) in page {
                after = after.max(id);
                fetched += 1;
                emit(
                    &self.emitter,
                    &self.dir,
                    inbound::message(&m, &self.dir),
                    &self.account,
                )
                .await;
                // Seen even when not bridged (a bot's), so the next catch-up starts after it.
                self.dir.saw(channel, id);
            }
            left = left.saturating_sub(limit);
            if !full {
                break;
            }
        }
        if fetched > 0 {
            tracing::info!(account = %self.account, channel, messages = fetched, "caught up on what was said during the gap");
        }
        if left == 0 {
            tracing::warn!(account = %self.account, channel, cap, "more was said during the gap than catch_up_messages fetches; older messages of the gap are not bridged");
        }
    }
}
