//! # passerelle-telegram
//!
//! The Telegram connector (`kind = "telegram"`), on the official Bot API only.
//!
//! A *room* is a chat id: a group or supergroup (negative, `-100…` for supergroups), a channel, or
//! a person's private chat with the bot (their user id). Forum topics of a supergroup are threads
//! (`message_thread_id`). A group upgraded to a supergroup is followed to its new id.
//!
//! Updates arrive by long polling (`getUpdates`; the offset is saved in the store only after the
//! updates before it were stored, so a restart neither loses nor repeats one) or by webhook
//! (`mode = "webhook"`: `setWebhook` with a secret token, served at `/hooks/NAME`). Either way
//! each update's events are durably stored before it is acknowledged, and the daemon drops an
//! update delivered twice by its ids.
//!
//! Both ways: text, replies, edits, deletes, reactions (a bot sets one per message), files
//! (uploaded; offered to other networks through signed links, since Telegram's own file links
//! hold the token), topics as threads; inbound joins and leaves. `429 retry_after` is honoured.
//!
//! ## Layout
//! - [`config`]: the typed account table.
//! - [`api`]: the Bot API client and its errors.
//! - [`inbound`]: updates to events.
//! - [`intake`]: where updates go, and chat migrations.
//! - [`outbound`]: events to Bot API calls.
//! - [`hook`]: the webhook and file-link endpoints.

pub mod api;
pub mod config;
pub mod hook;
pub mod import;
pub mod inbound;
pub mod intake;
pub mod outbound;
#[cfg(feature = "testing")]
/// A faithful fake of Telegram's Bot API for tests (feature `testing`).
pub mod testing;

use api::{ApiError, BotApi};
use futures::future::BoxFuture;
use intake::{Chats, Intake};
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::webhook::{DEFAULT_MAX_BODY, HookCheck, HookSettings, Proof, WebhookEndpoint};
use passerelle_sdk::{
    AccountId, BuildContext, CancellationToken, Capabilities, ConfigIssue, ConnectionState,
    Connector, ConnectorError, ConnectorFactory, ConnectorIo, Receipt, RoomId, SendError,
    StateHandle, StatusReporter,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The update kinds asked for (`message_reaction` needs the bot to be an administrator).
const ALLOWED: [&str; 5] = [
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "message_reaction",
];

/// The state key of the next update to ask for.
const OFFSET: &str = "offset";

/// Builds Telegram connectors.
pub struct TelegramFactory;

impl ConnectorFactory for TelegramFactory {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn matterbridge(&self) -> Option<&dyn passerelle_sdk::import::MatterbridgeImport> {
        Some(&import::Import)
    }

    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        Ok(Box::new(TelegramConnector {
            config: config::TelegramConfig::parse(table)?,
            data_dir: ctx.data_dir.clone(),
        }))
    }
}

/// One bot.
pub struct TelegramConnector {
    config: config::Settings,
    data_dir: std::path::PathBuf,
}

/// How Telegram's calls to the hook are proved: the secret token it sends as a header.
fn hook_settings(secret: &passerelle_sdk::Secret) -> HookSettings {
    HookSettings {
        proof: Proof::SecretHeader {
            header: "x-telegram-bot-api-secret-token",
            token: secret.clone(),
        },
        verify_token: None,
        max_body: DEFAULT_MAX_BODY,
    }
}

impl Connector for TelegramConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            threads: true,
            attachments: true,
            membership: false,
            ..Capabilities::default()
        }
    }

    fn limits(&self) -> passerelle_sdk::Limits {
        passerelle_sdk::Limits {
            max_text_bytes: None,
            max_upload_bytes: Some(self.config.media.max_upload_bytes),
            ..Default::default()
        }
    }

    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        config::chat_id(room.as_str()).map(|_| ()).ok_or_else(|| {
            "a Telegram room is a chat id: digits, negative for groups (-100… for supergroups)"
                .to_owned()
        })
    }

    fn room_kind(&self, room: &RoomId) -> passerelle_sdk::RoomKind {
        // A positive chat id is a private chat with one user; groups and channels are negative.
        match config::chat_id(room.as_str()) {
            Some(id) if id > 0 => passerelle_sdk::RoomKind::Private,
            _ => passerelle_sdk::RoomKind::Group,
        }
    }

    /// In webhook mode only (a polling account has no hook).
    fn relay(&self, account: &AccountId) -> Option<Arc<dyn passerelle_sdk::relay::Relay>> {
        let (_, secret) = self.config.webhook.as_ref()?;
        Some(Arc::new(HookCheck::new(
            account.as_str(),
            hook_settings(secret),
        )))
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let cfg = self.config;
            let api = BotApi::new(&cfg.api_base, &cfg.token, cfg.request_timeout)
                .map_err(ConnectorError::Fatal)?;
            let me = match api.call("getMe", &json!({})).await {
                Ok(me) => me,
                Err(e) if e.is_auth() => {
                    return Err(ConnectorError::AuthRejected(format!(
                        "Telegram refused the bot token: {e}"
                    )));
                }
                Err(e) => return Err(ConnectorError::Disconnected(e.to_string())),
            };
            let bot_id = me
                .get("id")
                .and_then(serde_json::Value::as_i64)
                .ok_or_else(|| {
                    ConnectorError::Disconnected("getMe answered without the bot's id".into())
                })?;
            let links = SignedLinks::for_account(
                cfg.media.public_url.as_deref(),
                io.account.as_str(),
                &self.data_dir,
            )?;
            let chats = Arc::new(Chats::load(&io.rooms, &io.state).await);
            let intake = Arc::new(Intake {
                bot_id,
                chats: chats.clone(),
                links: links.clone(),
                max_bytes: cfg.media.max_upload_bytes,
                emitter: io.emitter.clone(),
                state: io.state.clone(),
                account: io.account.to_string(),
            });
            let webhook = match &cfg.webhook {
                Some((url, secret)) => {
                    let params = json!({
                        "url": url,
                        "secret_token": secret.expose(),
                        "allowed_updates": ALLOWED,
                        // One delivery at a time keeps each chat's order.
                        "max_connections": 1,
                        "drop_pending_updates": false,
                    });
                    if let Err(e) = api.call("setWebhook", &params).await {
                        return Err(start_error("setWebhook", e));
                    }
                    Some(WebhookEndpoint::new(
                        io.account.as_str(),
                        hook_settings(secret),
                        Arc::new(hook::Sink(intake.clone())),
                    ))
                }
                None => {
                    // getUpdates answers 409 while a webhook is set: remove any, keeping what
                    // Telegram holds for us.
                    if let Err(e) = api
                        .call("deleteWebhook", &json!({"drop_pending_updates": false}))
                        .await
                    {
                        return Err(start_error("deleteWebhook", e));
                    }
                    None
                }
            };
            let polling = webhook.is_none();
            io.http.serve(Arc::new(hook::Endpoints {
                webhook,
                links,
                api: api.clone(),
                max_bytes: cfg.media.max_upload_bytes,
            }));
            io.status.set(ConnectionState::Connected);
            tracing::info!(account = %io.account, bot = bot_id, polling, "Telegram bot ready");
            let stop = io.shutdown.child_token();
            let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<ConnectorError>(1);
            let poller = polling.then(|| {
                tokio::spawn(poll(
                    api.clone(),
                    intake.clone(),
                    io.state.clone(),
                    io.status.clone(),
                    cfg.poll_timeout,
                    stop.clone(),
                    fatal_tx,
                ))
            });
            let sender = outbound::Sender {
                api: &api,
                config: &cfg,
            };
            let result = loop {
                let next = tokio::select! {
                    _ = io.shutdown.cancelled() => break Ok(()),
                    Some(e) = fatal.recv() => break Err(e),
                    next = io.outbound.recv() => next,
                };
                let Some(out) = next else { break Ok(()) };
                let chat = match chats.chat_of(&out.event.room) {
                    Some(c) if io.rooms.contains(&out.event.room) => c,
                    _ => {
                        out.respond(Err(SendError::RoomNotFound));
                        continue;
                    }
                };
                let mut sent = sender.send(chat, &out.event).await;
                if let Err(f) = &sent
                    && let Some(to) = f.migrate_to
                {
                    chats
                        .follow(
                            inbound::Migration { from: chat, to },
                            &io.state,
                            io.account.as_str(),
                        )
                        .await;
                    sent = sender.send(to, &out.event).await;
                }
                match sent {
                    Ok(id) => out.respond(Ok(Receipt {
                        remote_id: id.map(Into::into),
                    })),
                    Err(f) if f.auth => {
                        out.respond(Err(SendError::Disconnected));
                        break Err(ConnectorError::AuthRejected(
                            "Telegram refused the bot token while sending".into(),
                        ));
                    }
                    Err(f) => out.respond(Err(f.error)),
                }
            };
            stop.cancel();
            if let Some(p) = poller {
                let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
            }
            io.status.set(ConnectionState::Stopped);
            result
        })
    }
}

fn start_error(call: &str, e: ApiError) -> ConnectorError {
    if e.is_auth() {
        ConnectorError::AuthRejected(format!("{call}: {e}"))
    } else {
        ConnectorError::Disconnected(format!("{call}: {e}"))
    }
}

/// Long-polls `getUpdates` until `stop`: each batch's events are stored before the offset after
/// them is saved (and only then sent to Telegram, which confirms them). Failures are retried with
/// backoff; a refused token ends the account through `fatal`.
async fn poll(
    api: BotApi,
    intake: Arc<Intake>,
    state: StateHandle,
    status: StatusReporter,
    timeout: Duration,
    stop: CancellationToken,
    fatal: tokio::sync::mpsc::Sender<ConnectorError>,
) {
    let mut offset: i64 = match state.get(OFFSET).await {
        Ok(Some(v)) => String::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let params = json!({
            "offset": offset,
            "limit": 100,
            "timeout": timeout.as_secs(),
            "allowed_updates": ALLOWED,
        });
        let call = api.call_long("getUpdates", &params, timeout);
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = call => a,
        };
        let updates = match answer {
            Ok(serde_json::Value::Array(updates)) => updates,
            Ok(_) => {
                tracing::warn!(account = %intake.account, "getUpdates answered something else than a list");
                Vec::new()
            }
            Err(e) if e.is_auth() => {
                let _ = fatal
                    .send(ConnectorError::AuthRejected(format!("getUpdates: {e}")))
                    .await;
                return;
            }
            Err(e) => {
                let wait = match &e {
                    ApiError::Api {
                        retry_after: Some(s),
                        ..
                    } => Duration::from_secs(*s),
                    _ => backoff,
                };
                if matches!(e, ApiError::Api { code: 409, .. }) {
                    tracing::error!(account = %intake.account, "another client takes this bot's updates (409); is a second bridge running?");
                } else {
                    tracing::warn!(account = %intake.account, error = %e, "getUpdates failed; retrying");
                }
                status.set(ConnectionState::Connecting);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        status.set(ConnectionState::Connected);
        let mut next = offset;
        let mut stalled = false;
        for update in &updates {
            let Some(id) = update.get("update_id").and_then(serde_json::Value::as_i64) else {
                continue;
            };
            if id < offset {
                continue;
            }
            if let Err(e) = intake.take(update).await {
                tracing::warn!(account = %intake.account, error = %e, "update not stored; it will be fetched again");
                stalled = true;
                break;
            }
            next = id.saturating_add(1);
        }
        if next != offset {
            offset = next;
            if let Err(e) = state.put(OFFSET, offset.to_string()).await {
                tracing::warn!(account = %intake.account, error = %e, "offset not saved; updates since the last save will be fetched again (and dropped as duplicates)");
            }
        }
        if stalled {
            // The daemon could not store: give it a moment before the update is fetched again.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        } else {
            backoff = Duration::from_secs(1);
        }
    }
}
