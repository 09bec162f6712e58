//! Sync, for both modes: one `sync_once` at a time, with our own sync token in the connector
//! state, advanced only after every event of a response was stored by the daemon; backfill of a
//! `limited` timeline; encrypted events held for their keys; the admins' commands.

use crate::admin;
use crate::errors::{self, Meaning};
use crate::held::Held;
use crate::media::MediaLinks;
use crate::rooms::RoomMap;
use crate::translate::{self, Inbound};
use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::{FilterDefinition, RoomEventFilter, RoomFilter};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::AnySyncTimelineEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UInt};
use matrix_sdk::sync::SyncResponse;
use passerelle_sdk::{AccountId, ConnectionState, ConnectorError, EmitError, Emitter, StateHandle};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const LONG_POLL: Duration = Duration::from_secs(30);

pub(crate) struct Syncer {
    pub(crate) client: Client,
    pub(crate) me: OwnedUserId,
    pub(crate) rooms: Arc<RoomMap>,
    pub(crate) emitter: Emitter,
    pub(crate) state: StateHandle,
    pub(crate) status: passerelle_sdk::StatusReporter,
    pub(crate) links: MediaLinks,
    pub(crate) admins: Vec<String>,
    pub(crate) account: AccountId,
    pub(crate) view: passerelle_sdk::DaemonView,
    /// The connector state key of the sync token.
    pub(crate) token_key: &'static str,
    /// Appservice mode: plain events come through transactions, so only what was encrypted is
    /// bridged from here, and invites are the transactions' business.
    pub(crate) encrypted_only: bool,
    /// Events fetched back per room when a sync's timeline is `limited` (0: none).
    pub(crate) backfill_limit: u32,
    /// Encrypted events whose key has not come yet, tried again after every sync.
    pub(crate) held: std::sync::Mutex<Held<HeldEvent>>,
}

/// `raw` decrypted, when its key is there. (matrix-sdk answers a failed decryption with an
/// event still marked unable to decrypt, not with an error.)
async fn decrypt(
    room: &matrix_sdk::Room,
    raw: &Raw<AnySyncTimelineEvent>,
) -> Option<TimelineEvent> {
    let event = room
        .decrypt_event(raw.cast_ref_unchecked(), None)
        .await
        .ok()?;
    matches!(event.kind, TimelineEventKind::Decrypted(_)).then_some(event)
}

/// An event held for its key: its room and its raw (encrypted) form.
pub(crate) type HeldEvent = (OwnedRoomId, Raw<AnySyncTimelineEvent>);

fn sync_filter() -> Filter {
    let mut timeline = RoomEventFilter::default();
    timeline.limit = Some(UInt::from(200u32));
    let mut room = RoomFilter::default();
    room.timeline = timeline;
    let mut def = FilterDefinition::default();
    def.room = room;
    Filter::FilterDefinition(def)
}

impl Syncer {
    /// Syncs until `stop` or a failure. Events still held for their keys then are counted as
    /// dropped (the sync token is past them): never lost without a trace.
    pub(crate) async fn run(self, stop: CancellationToken) -> Result<(), ConnectorError> {
        let result = self.sync_loop(stop).await;
        let left = self
            .held
            .lock()
            .map(|mut h| h.take_all().len())
            .unwrap_or(0);
        if left > 0 {
            warn!(
                events = left,
                "undecryptable events still held when sync stopped; dropped"
            );
            for _ in 0..left {
                passerelle_sdk::drops::inbound(&self.account, "matrix_undecryptable");
            }
        }
        result
    }

    async fn sync_loop(&self, stop: CancellationToken) -> Result<(), ConnectorError> {
        let mut token: Option<String> = self
            .state
            .get(self.token_key)
            .await
            .map_err(|e| ConnectorError::Fatal(format!("state: {e}")))?
            .and_then(|b| String::from_utf8(b).ok());
        let mut failures = 0u32;
        // The first sync of a run returns at once, with what came while the account was away
        // (a restart, or a take-over at another instance), so the account is connected without
        // waiting a long poll out; the next ones wait for news.
        let mut poll = Duration::ZERO;
        loop {
            let settings = match &token {
                Some(t) => SyncSettings::default().token(t.clone()).timeout(poll),
                None => SyncSettings::default().timeout(Duration::ZERO),
            }
            .filter(sync_filter());
            let response = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = self.client.sync_once(settings) => r,
            };
            let response = match response {
                Ok(r) => r,
                Err(e) => match errors::meaning(&e) {
                    Meaning::BadToken => {
                        return Err(ConnectorError::AuthRejected("access token refused".into()));
                    }
                    Meaning::RateLimited(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    m => {
                        failures += 1;
                        self.status.set(ConnectionState::Connecting);
                        if failures >= 5 {
                            return Err(errors::connector_error(m, "sync"));
                        }
                        let wait = Duration::from_millis(500 * 2u64.pow(failures));
                        warn!(attempt = failures, "sync failed; retrying in {wait:?}");
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                },
            };
            failures = 0;
            poll = LONG_POLL;
            let first = token.is_none();
            if !self.encrypted_only {
                self.accept_invites(&response).await;
            }
            self.status.set(ConnectionState::Connected);
            if !first {
                match self.deliver(&response, token.as_deref()).await {
                    Ok(()) => {}
                    Err(EmitError::ShuttingDown) => return Ok(()),
                    Err(e) => {
                        return Err(ConnectorError::Disconnected(format!(
                            "the daemon could not store an event ({e}); resyncing"
                        )));
                    }
                }
            }
            self.state
                .put(self.token_key, response.next_batch.clone())
                .await
                .map_err(|e| ConnectorError::Fatal(format!("state: {e}")))?;
            token = Some(response.next_batch);
        }
    }

    async fn accept_invites(&self, response: &SyncResponse) {
        for (room_id, invite) in &response.rooms.invited {
            let inviter = invite.invite_state.events.iter().find_map(|raw| {
                let v: Value = serde_json::from_str(raw.json().get()).ok()?;
                (v["type"] == "m.room.member"
                    && v["state_key"] == self.me.as_str()
                    && v["content"]["membership"] == "invite")
                    .then(|| v["sender"].as_str().map(str::to_owned))
                    .flatten()
            });
            let from_admin = inviter.as_ref().is_some_and(|i| self.admins.contains(i));
            if !self.rooms.contains(room_id) && !from_admin {
                debug!(room = %room_id, "ignoring an invite to a room no link names");
                continue;
            }
            match self.client.join_room_by_id(room_id).await {
                Ok(_) => info!(room = %room_id, "joined on invite"),
                Err(e) => warn!(room = %room_id, error = %e, "could not join on invite"),
            }
        }
    }

    /// Hands every event of a sync response to the daemon, in order per room: what a `limited`
    /// timeline left out first (fetched back from the homeserver, up to `backfill_limit`), then
    /// the timeline. Then the held undecryptable events are tried again.
    async fn deliver(&self, response: &SyncResponse, since: Option<&str>) -> Result<(), EmitError> {
        for (room_id, update) in &response.rooms.joined {
            let Some(name) = self.rooms.name(room_id) else {
                self.admin_room(room_id, &update.timeline.events).await;
                continue;
            };
            let room = self.client.get_room(room_id);
            let mut events: Vec<TimelineEvent> = Vec::new();
            if update.timeline.limited
                && self.backfill_limit > 0
                && let (Some(room), Some(prev), Some(since)) =
                    (&room, update.timeline.prev_batch.as_deref(), since)
            {
                events = self.backfill(room, prev, since).await;
            }
            events.extend(update.timeline.events.iter().cloned());
            // In a room we just joined, the timeline reaches back before our join: skip that part.
            let start = events
                .iter()
                .rposition(|e| {
                    let v: Value = serde_json::from_str(e.raw().json().get()).unwrap_or_default();
                    v["type"] == "m.room.member"
                        && v["state_key"] == self.me.as_str()
                        && v["content"]["membership"] == "join"
                        && v["unsigned"]["prev_content"]["membership"] != "join"
                })
                .map(|i| i + 1)
                .unwrap_or(0);
            for timeline_event in &events[start..] {
                if self.encrypted_only
                    && matches!(timeline_event.kind, TimelineEventKind::PlainText { .. })
                {
                    continue;
                }
                let mut raw = timeline_event.raw().clone();
                // Still encrypted: matrix-sdk could not decrypt it (or did not try, when its key
                // was not there yet).
                let encrypted = match &timeline_event.kind {
                    TimelineEventKind::UnableToDecrypt { .. } => true,
                    TimelineEventKind::PlainText { .. } => {
                        serde_json::from_str::<Value>(raw.json().get())
                            .is_ok_and(|v| v["type"] == "m.room.encrypted")
                    }
                    _ => false,
                };
                if encrypted {
                    // The key may have arrived later in the same response.
                    let decrypted = match &room {
                        Some(room) => decrypt(room, &raw).await,
                        None => None,
                    };
                    match decrypted {
                        Some(decrypted) => raw = decrypted.raw().clone(),
                        None => {
                            self.hold(room_id, raw);
                            continue;
                        }
                    }
                }
                self.bridge(room_id, name, room.as_ref(), &raw).await?;
            }
        }
        self.retry_held().await
    }

    /// What a `limited` timeline left out in `room`: `/messages` backwards from its `prev_batch`
    /// to the previous sync's token, oldest first, at most `backfill_limit` events (the newest of
    /// them). A failed page is tried three times; what could not be fetched is counted.
    async fn backfill(
        &self,
        room: &matrix_sdk::Room,
        prev: &str,
        since: &str,
    ) -> Vec<TimelineEvent> {
        let cap = self.backfill_limit as usize;
        let mut fetched: Vec<TimelineEvent> = Vec::new();
        let mut from = prev.to_owned();
        let mut cut = false;
        'pages: loop {
            let options = || {
                let mut options = MessagesOptions::backward().from(from.as_str());
                options.to = Some(since.to_owned());
                options.limit = UInt::from(100u32);
                options
            };
            let mut tries = 0;
            let page = loop {
                match room.messages(options()).await {
                    Ok(page) => break page,
                    Err(e) if tries < 2 => {
                        tries += 1;
                        debug!(room = %room.room_id(), error = %e, "backfill page failed; trying again");
                        tokio::time::sleep(Duration::from_millis(500 * tries)).await;
                    }
                    Err(e) => {
                        warn!(room = %room.room_id(), error = %e, "backfill failed; what the gap held is not bridged");
                        passerelle_sdk::drops::inbound(&self.account, "matrix_backfill_failed");
                        break 'pages;
                    }
                }
            };
            let done = page.chunk.is_empty() || page.end.is_none();
            for event in page.chunk {
                if fetched.len() >= cap {
                    cut = true;
                    break;
                }
                fetched.push(event);
            }
            match page.end {
                Some(end) if !done && !cut => from = end,
                _ => break,
            }
        }
        if cut {
            warn!(room = %room.room_id(), limit = cap, "more was said while the bridge was away than backfill_limit; the oldest events are not bridged");
            passerelle_sdk::drops::inbound(&self.account, "matrix_backfill_limit");
        }
        if !fetched.is_empty() {
            info!(room = %room.room_id(), events = fetched.len(), "backfilled a gap in the timeline");
        }
        fetched.reverse();
        fetched
    }

    /// Holds an event whose key has not arrived; counted as dropped when no more can be held.
    fn hold(&self, room_id: &OwnedRoomId, raw: Raw<AnySyncTimelineEvent>) {
        let held = self
            .held
            .lock()
            .map(|mut h| {
                h.hold(std::time::Instant::now(), (room_id.clone(), raw))
                    .is_ok()
            })
            .unwrap_or(false);
        if held {
            debug!(room = %room_id, "undecryptable event held until its key arrives");
        } else {
            warn!(room = %room_id, "undecryptable event dropped: too many held already");
            passerelle_sdk::drops::inbound(&self.account, "matrix_undecryptable");
        }
    }

    /// Tries the held events again (their keys may have come with this sync); those held too
    /// long are given up on, counted and logged.
    async fn retry_held(&self) -> Result<(), EmitError> {
        let waiting = match self.held.lock() {
            Ok(mut h) if !h.is_empty() => h.take_all(),
            _ => return Ok(()),
        };
        let mut failed = Vec::new();
        let mut waiting = waiting.into_iter();
        while let Some((seen, (room_id, raw))) = waiting.next() {
            let room = self.client.get_room(&room_id);
            let decrypted = match &room {
                Some(room) => decrypt(room, &raw).await,
                None => None,
            };
            match (decrypted, self.rooms.name(&room_id)) {
                (Some(event), Some(name)) => {
                    info!(room = %room_id, "a held event could be decrypted at last");
                    if let Err(e) = self
                        .bridge(&room_id, name, room.as_ref(), event.raw())
                        .await
                    {
                        // Not stored: keep it, and the rest, for the next round.
                        failed.push((seen, (room_id, raw)));
                        failed.extend(waiting);
                        self.put_back(failed);
                        return Err(e);
                    }
                }
                (None, Some(_)) => failed.push((seen, (room_id, raw))),
                // The room is no longer linked.
                (_, None) => {}
            }
        }
        self.put_back(failed);
        Ok(())
    }

    fn put_back(&self, failed: Vec<(std::time::Instant, HeldEvent)>) {
        let expired = match self.held.lock() {
            Ok(mut h) => h.put_back(std::time::Instant::now(), failed).too_old,
            Err(_) => 0,
        };
        for _ in 0..expired {
            passerelle_sdk::drops::inbound(&self.account, "matrix_undecryptable");
        }
        if expired > 0 {
            warn!(
                events = expired,
                "undecryptable events dropped: their keys never arrived"
            );
        }
    }

    /// Translates one (decrypted) event and hands it to the daemon.
    async fn bridge(
        &self,
        room_id: &OwnedRoomId,
        name: &passerelle_sdk::RoomId,
        room: Option<&matrix_sdk::Room>,
        raw: &Raw<AnySyncTimelineEvent>,
    ) -> Result<(), EmitError> {
        let Ok(v) = serde_json::from_str::<Value>(raw.json().get()) else {
            warn!(room = %room_id, "malformed event skipped");
            return Ok(());
        };
        if v["sender"] == self.me.as_str() {
            return Ok(());
        }
        let display = match (room, v["sender"].as_str()) {
            (Some(room), Some(sender)) => match OwnedUserId::try_from(sender) {
                Ok(uid) => room
                    .get_member_no_sync(&uid)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|m| m.display_name().map(str::to_owned)),
                Err(_) => None,
            },
            _ => None,
        };
        match translate::inbound(&v, name, display, &self.links) {
            Inbound::Event(event) => {
                let kind = event.kind.name();
                let d = self.emitter.emit(*event).await?;
                debug!(account = %self.account, room = %room_id, kind, disposition = ?d, "emitted");
            }
            Inbound::Skip(why) => debug!(room = %room_id, why, "not bridged"),
        }
        Ok(())
    }
}

impl Syncer {
    /// Answers the admins' commands in a room no link names.
    async fn admin_room(
        &self,
        room_id: &OwnedRoomId,
        events: &[matrix_sdk::deserialized_responses::TimelineEvent],
    ) {
        let Some(room) = self.client.get_room(room_id) else {
            return;
        };
        for e in events {
            if self.encrypted_only && matches!(e.kind, TimelineEventKind::PlainText { .. }) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(e.raw().json().get()) else {
                continue;
            };
            let sender = v["sender"].as_str().unwrap_or_default();
            if v["type"] != "m.room.message" || !self.admins.iter().any(|a| a == sender) {
                continue;
            }
            let members: Vec<String> = match room.members(matrix_sdk::RoomMemberships::JOIN).await {
                Ok(m) => m.iter().map(|m| m.user_id().to_string()).collect(),
                Err(_) => continue,
            };
            let me = self
                .client
                .user_id()
                .map(|u| u.to_string())
                .unwrap_or_default();
            let body = v["content"]["body"].as_str();
            let answer = admin::command(
                &self.state,
                &self.view,
                room_id.as_str(),
                &members,
                &me,
                sender,
                body,
            )
            .await;
            if let Some(text) = answer {
                admin::Notices::notice(&self.client, room_id.as_str(), &text).await;
            }
        }
    }
}

/// The bot mode's way to the admins: its own matrix-sdk client.
impl admin::Notices for Client {
    async fn usable(&self, room: &str) -> bool {
        OwnedRoomId::try_from(room).is_ok_and(|id| self.get_room(&id).is_some())
    }

    async fn open_direct(&self, admin: &str) -> Option<String> {
        let user = OwnedUserId::try_from(admin).ok()?;
        match self.create_dm(&user).await {
            Ok(r) => Some(r.room_id().to_string()),
            Err(e) => {
                warn!(error = %e, "could not open a direct chat with an admin");
                None
            }
        }
    }

    async fn notice(&self, room: &str, text: &str) {
        let Some(room) = OwnedRoomId::try_from(room)
            .ok()
            .and_then(|id| self.get_room(&id))
        else {
            return;
        };
        let content = serde_json::json!({"msgtype": "m.notice", "body": text});
        if let Err(e) = room.send_raw("m.room.message", content).await {
            warn!(error = %e, "could not send a notice to an admin");
        }
    }
}
