//! Sends: an outbound event as the ghost of its sender, by identity assertion, with transaction
//! ids from the event key so that a resend never duplicates.

use super::*;
use crate::plan;
use passerelle_sdk::Attachment;
use passerelle_sdk::fetch::Fetched;

/// The connector's side: ghosts and sends.
pub(super) struct Sender {
    pub(super) shared: Arc<Shared>,
    /// The bot's own device (with `encryption`): sends into encrypted rooms.
    pub(super) encrypted: Option<BotSender>,
    /// Ghosts registered, with the display name they were given.
    pub(super) ghosts: HashMap<String, Option<String>>,
    /// The remote avatar each ghost was given.
    pub(super) avatars: HashMap<String, String>,
    /// (ghost, room) pairs known to be joined.
    pub(super) joined: HashSet<(String, String)>,
}

impl Sender {
    pub(super) fn hs(&self) -> &Hs {
        &self.shared.hs
    }

    /// Whether the bot's device must carry `event` (message content in an encrypted room).
    pub(super) async fn through_bot(&self, room: &str, event: &Event) -> bool {
        let Some(bot) = &self.encrypted else {
            return false;
        };
        if matches!(event.kind, EventKind::Membership(_) | EventKind::Typing(_)) {
            return false;
        }
        let Ok(id) = matrix_sdk::ruma::OwnedRoomId::try_from(room) else {
            return false;
        };
        match bot.client.get_room(&id) {
            Some(r) => r
                .latest_encryption_state()
                .await
                .map(|s| s.is_encrypted())
                .unwrap_or(false),
            None => false,
        }
    }

    pub(super) async fn send(&mut self, out: &Outbound) -> Result<Receipt, SendError> {
        let event: &Event = &out.event;
        let room = self
            .shared
            .room_id(&event.room)
            .ok_or(SendError::RoomNotFound)?;
        if self.through_bot(&room, event).await
            && let Some(bot) = &self.encrypted
        {
            // Ghosts have no devices: in an encrypted room the bot's device speaks for them,
            // naming them (MSC4144 per-message profile and its text fallback).
            return bot.send(out).await;
        }
        plan::send(self, out).await
    }

    pub(super) async fn send_event(
        &mut self,
        out: &Outbound,
        event: &Event,
    ) -> Result<Receipt, SendError> {
        let room = self
            .shared
            .room_id(&event.room)
            .ok_or(SendError::RoomNotFound)?;
        let outgoing = translate::outbound(event).map_err(SendError::Unsupported)?;
        let ghost = self.ensure_ghost(out).await?;
        if !matches!(
            outgoing,
            Outgoing::Membership(
                MembershipChange::Leave | MembershipChange::Kick | MembershipChange::Ban
            )
        ) {
            self.ensure_joined(&ghost, &room).await?;
        }
        let txn = translate::txn_id(&event.key, "0");
        let r = enc(&room);
        let state = &self.shared.state;
        let result = match outgoing {
            Outgoing::Send { kind, mut content } => {
                // A reply mentions the person answered (when a Matrix user), as clients do, so
                // they are notified; nobody else is pinged by bridged text.
                if let Some(target) = &event.reply_to {
                    let path = format!(
                        "/_matrix/client/v3/rooms/{r}/event/{}",
                        enc(target.as_str())
                    );
                    if let Ok(v) = self
                        .hs()
                        .call(reqwest::Method::GET, &path, Some(&ghost), None)
                        .await
                        && let Some(sender) = v["sender"].as_str()
                        && !self.shared.names.is_ours(sender)
                    {
                        translate::mention(&mut content, sender);
                    }
                }
                let path = format!(
                    "/_matrix/client/v3/rooms/{r}/send/{}/{}",
                    enc(kind),
                    enc(&txn)
                );
                let v = self
                    .hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&content))
                    .await;
                if let (Ok(v), EventKind::Reaction { target, key, .. }) = (&v, &event.kind)
                    && let Some(id) = v["event_id"].as_str()
                {
                    let _ = state
                        .put(
                            &plan::reaction_key(&room, target.as_str(), key.as_str(), &ghost),
                            id,
                        )
                        .await;
                }
                v
            }
            Outgoing::Redact { target } => {
                let path = format!(
                    "/_matrix/client/v3/rooms/{r}/redact/{}/{}",
                    enc(&target),
                    enc(&txn)
                );
                self.hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&json!({})))
                    .await
            }
            Outgoing::Unreact { target, key } => {
                let k = plan::reaction_key(&room, &target, &key, &ghost);
                let Some(ours) = state.get_text(&k).await.ok().flatten() else {
                    return Ok(Receipt::default());
                };
                let path = format!(
                    "/_matrix/client/v3/rooms/{r}/redact/{}/{}",
                    enc(&ours),
                    enc(&txn)
                );
                let v = self
                    .hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&json!({})))
                    .await;
                if v.is_ok() {
                    let _ = state.delete(&k).await;
                }
                v.map(|_| Value::Null)
            }
            Outgoing::State { kind, content } => {
                // A topic is set by the ghost where it may; else by the bot, when it may.
                let path = format!("/_matrix/client/v3/rooms/{r}/state/{}/", enc(kind));
                let by_ghost = self
                    .hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&content))
                    .await;
                match by_ghost {
                    Err(e) if e.status == 403 => {
                        let bot = self.shared.names.bot.clone();
                        self.hs()
                            .call(reqwest::Method::PUT, &path, Some(&bot), Some(&content))
                            .await
                    }
                    other => other,
                }
            }
            Outgoing::Membership(MembershipChange::Join) => Ok(Value::Null),
            Outgoing::Membership(_) => {
                let path = format!("/_matrix/client/v3/rooms/{r}/leave");
                let v = self
                    .hs()
                    .call(reqwest::Method::POST, &path, Some(&ghost), Some(&json!({})))
                    .await;
                self.joined.remove(&(ghost.clone(), room.clone()));
                v
            }
            Outgoing::Typing(on) => {
                let path = format!("/_matrix/client/v3/rooms/{r}/typing/{}", enc(&ghost));
                self.hs()
                    .call(
                        reqwest::Method::PUT,
                        &path,
                        Some(&ghost),
                        Some(&json!({"typing": on, "timeout": 15000})),
                    )
                    .await
            }
        };
        match result {
            Ok(v) => Ok(Receipt {
                remote_id: v["event_id"].as_str().map(RemoteMessageId::new),
            }),
            Err(e) => {
                if e.status == 403 {
                    // Perhaps no longer in the room: join again next time.
                    self.joined.remove(&(ghost, room));
                }
                Err(errors::send_error(e.meaning()))
            }
        }
    }
}

impl plan::Carrier for Sender {
    async fn event(&mut self, out: &Outbound, event: &Event) -> Result<Receipt, SendError> {
        self.send_event(out, event).await
    }

    async fn before_files(&mut self, out: &Outbound) -> Result<(), SendError> {
        let room = self
            .shared
            .room_id(&out.event.room)
            .ok_or(SendError::RoomNotFound)?;
        let ghost = self.ensure_ghost(out).await?;
        self.ensure_joined(&ghost, &room).await
    }

    /// Uploads the file as the ghost, then sends it.
    async fn file(
        &mut self,
        out: &Outbound,
        txn: String,
        att: &Attachment,
        file: Fetched,
    ) -> Result<Option<RemoteMessageId>, SendError> {
        let ghost = self.ensure_ghost(out).await?;
        let size = file.data.len();
        let path = format!(
            "/_matrix/media/v3/upload?filename={}",
            enc(att.name.as_str())
        );
        let mxc = self
            .hs()
            .upload(&path, &ghost, &file.mime, file.data)
            .await
            .map_err(|e| errors::send_error(e.meaning()))?;
        let content = json!({
            "msgtype": media::msgtype(&file.mime),
            "body": att.name.as_str(),
            "filename": att.name.as_str(),
            "url": mxc,
            "info": {"mimetype": file.mime, "size": size},
            "m.mentions": {},
        });
        self.content(out, txn, content).await
    }

    async fn content(
        &mut self,
        out: &Outbound,
        txn: String,
        content: Value,
    ) -> Result<Option<RemoteMessageId>, SendError> {
        let room = self
            .shared
            .room_id(&out.event.room)
            .ok_or(SendError::RoomNotFound)?;
        let ghost = self.ensure_ghost(out).await?;
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(&room),
            enc(&txn)
        );
        let v = self
            .hs()
            .act(reqwest::Method::PUT, &path, &ghost, &content)
            .await?;
        Ok(v["event_id"].as_str().map(RemoteMessageId::new))
    }

    fn fetch_limits(&self) -> (u64, bool) {
        (self.shared.max_upload, self.shared.fetch_private)
    }
}
