//! Sends through matrix-sdk's own device: bot mode, and the appservice's bot device in encrypted
//! rooms (where ghosts, having no devices, can't speak).

use crate::errors;
use crate::plan;
use crate::rooms::RoomMap;
use crate::translate::{self, Outgoing};
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId};
use matrix_sdk::{Client, RoomState};
use passerelle_sdk::Attachment;
use passerelle_sdk::fetch::Fetched;
use passerelle_sdk::{Event, Outbound, Receipt, RemoteMessageId, SendError, StateHandle};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

pub(crate) struct BotSender {
    pub(crate) client: Client,
    pub(crate) rooms: Arc<RoomMap>,
    pub(crate) state: StateHandle,
    /// Appservice mode in an encrypted room: the text carries no name yet (ghosts carry it
    /// elsewhere), so the bot writes the per-message profile's fallback (`Name: text`) itself.
    pub(crate) name_fallback: bool,
    /// Linked rooms the homeserver said do not exist: sends to them are refused for good
    /// (counted drops), not retried until an invite that can't come.
    pub(crate) missing: Arc<HashSet<OwnedRoomId>>,
    /// The largest attachment uploaded, and whether private addresses may be fetched.
    pub(crate) max_upload: u64,
    pub(crate) fetch_private: bool,
}

impl BotSender {
    /// Sends `out`: a message's files uploaded (encrypted in an encrypted room) after its text.
    pub(crate) async fn send(&self, out: &Outbound) -> Result<Receipt, SendError> {
        plan::send(&mut &*self, out).await
    }

    /// The joined room an event goes to.
    fn joined(&self, event: &Event) -> Result<matrix_sdk::Room, SendError> {
        let room_id = self.rooms.id(&event.room).ok_or(SendError::RoomNotFound)?;
        match self.client.get_room(room_id) {
            Some(r) if r.state() == RoomState::Joined => Ok(r),
            _ if self.missing.contains(room_id) => Err(SendError::RoomNotFound),
            // Linked but not joined yet (no invite so far): try again later.
            _ => Err(SendError::Disconnected),
        }
    }

    async fn send_event(&self, event: &Event) -> Result<Receipt, SendError> {
        let room = self.joined(event)?;
        let room_id = room.room_id();
        let outgoing = translate::outbound(event).map_err(SendError::Unsupported)?;
        let txn = translate::txn_id(&event.key, "0");
        match outgoing {
            Outgoing::Send { kind, mut content } => {
                // A reply mentions the person answered, as clients do, so they are notified.
                if let Some(target) = &event.reply_to
                    && let Ok(id) = OwnedEventId::try_from(target.as_str())
                    && let Ok(answered) = room.event(&id, None).await
                    && let Ok(v) = serde_json::from_str::<Value>(answered.raw().json().get())
                    && let Some(sender) = v["sender"].as_str()
                    && Some(sender) != self.client.user_id().map(|u| u.as_str())
                {
                    translate::mention(&mut content, sender);
                }
                if kind == "m.room.message" {
                    if self.name_fallback {
                        translate::add_name_fallback(&mut content, event.sender.name());
                    }
                    content["com.beeper.per_message_profile"] =
                        translate::per_message_profile(event, self.name_fallback);
                }
                let result = room
                    .send_raw(kind, content)
                    .with_transaction_id(&OwnedTransactionId::from(txn.clone()))
                    .await;
                match result {
                    Ok(r) => {
                        if let passerelle_sdk::EventKind::Reaction { target, key, .. } = &event.kind
                        {
                            let _ = self
                                .state
                                .put(
                                    &plan::reaction_key(
                                        room_id.as_str(),
                                        target.as_str(),
                                        key.as_str(),
                                        event.sender.id.as_str(),
                                    ),
                                    r.response.event_id.as_str(),
                                )
                                .await;
                        }
                        Ok(Receipt {
                            remote_id: Some(RemoteMessageId::new(r.response.event_id.as_str())),
                        })
                    }
                    Err(e) => Err(errors::send_error(errors::meaning(&e))),
                }
            }
            Outgoing::Redact { target } => {
                let id = OwnedEventId::try_from(target.as_str())
                    .map_err(|_| SendError::Rejected("bad event id".into()))?;
                room.redact(&id, None, Some(OwnedTransactionId::from(txn.clone())))
                    .await
                    .map(|_| Receipt::default())
                    .map_err(|e| errors::send_error(errors::http_meaning(&e)))
            }
            Outgoing::Unreact { target, key } => {
                let k =
                    plan::reaction_key(room_id.as_str(), &target, &key, event.sender.id.as_str());
                let Some(ours) = self.state.get_text(&k).await.ok().flatten() else {
                    return Ok(Receipt::default());
                };
                let id = OwnedEventId::try_from(ours.as_str())
                    .map_err(|_| SendError::Rejected("bad event id".into()))?;
                room.redact(&id, None, Some(OwnedTransactionId::from(txn.clone())))
                    .await
                    .map_err(|e| errors::send_error(errors::http_meaning(&e)))?;
                let _ = self.state.delete(&k).await;
                Ok(Receipt::default())
            }
            Outgoing::State { kind, content } => room
                .send_state_event_raw(kind, "", content)
                .await
                .map(|_| Receipt::default())
                .map_err(|e| errors::send_error(errors::meaning(&e))),
            Outgoing::Membership(_) => Err(SendError::Unsupported("membership")),
            Outgoing::Typing(_) => Err(SendError::Unsupported("typing")),
        }
    }
}

impl plan::Carrier for &BotSender {
    async fn event(&mut self, _: &Outbound, event: &Event) -> Result<Receipt, SendError> {
        self.send_event(event).await
    }

    async fn before_files(&mut self, out: &Outbound) -> Result<(), SendError> {
        self.joined(&out.event).map(|_| ())
    }

    async fn file(
        &mut self,
        out: &Outbound,
        txn: String,
        att: &Attachment,
        file: Fetched,
    ) -> Result<Option<RemoteMessageId>, SendError> {
        let room = self.joined(&out.event)?;
        let mime: mime::Mime = file.mime.parse().unwrap_or(mime::APPLICATION_OCTET_STREAM);
        let config = AttachmentConfig::new().txn_id(OwnedTransactionId::from(txn));
        let sent = room
            .send_attachment(att.name.as_str(), &mime, file.data, config)
            .await
            .map_err(|e| errors::send_error(errors::meaning(&e)))?;
        Ok(Some(RemoteMessageId::new(sent.event_id.as_str())))
    }

    async fn content(
        &mut self,
        out: &Outbound,
        txn: String,
        content: Value,
    ) -> Result<Option<RemoteMessageId>, SendError> {
        let room = self.joined(&out.event)?;
        let sent = room
            .send_raw("m.room.message", content)
            .with_transaction_id(&OwnedTransactionId::from(txn))
            .await
            .map_err(|e| errors::send_error(errors::meaning(&e)))?;
        Ok(Some(RemoteMessageId::new(sent.response.event_id.as_str())))
    }

    fn fetch_limits(&self) -> (u64, bool) {
        (self.max_upload, self.fetch_private)
    }
}
