//! The router: takes each inbound event, decides where it may go, and queues it durably.
//!
//! It knows no network by name: every difference between networks comes from the destination's
//! [`passerelle_sdk::Capabilities`] and the accounts' rights. The steps, for each event:
//! 1. refuse it when its account lacks `read`;
//! 2. look up its destinations in the [`table::RouteTable`];
//! 3. translate its relations (reply, thread, target) into core keys through the message map;
//! 4. store the event's mapping and one sealed outbox row per destination in one transaction
//!    (a duplicate origin id stops here), and only then acknowledge the connector;
//! 5. hand the rows to the per-room delivery lanes ([`crate::bus`]), where the
//!    [`degrade`] rules and the [`guard::RouteGuard`] run before every send.

pub mod degrade;
pub mod guard;
pub mod key;
#[cfg(test)]
mod proptests;
pub mod table;

use crate::bus::Lanes;
use crate::config::Rights;
use crate::mapping::{MessageMap, Relations};
use crate::metrics;
use crate::store::seal::Sealer;
use crate::store::{Accepted, NewDelivery, NewEvent, OutboxEntry, Store};
use passerelle_sdk::{
    AccountId, Capabilities, Disposition, EmitError, Event, EventKey, EventKind, Inbound, Limits,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Every account's policy. Its hash is FxHash, as in the route table and the guard: these maps
/// are built from the configuration only, so input from a network can look keys up but never
/// insert any, and a fast hash of short ids costs less than the look-up's cache misses.
pub type Policies = HashMap<AccountId, AccountPolicy, rustc_hash::FxBuildHasher>;

/// The destinations of a plan, shared with the route table when none is left out.
pub type Destinations = Arc<[table::Destination]>;

/// What the core knows of an account when routing to or from it.
#[derive(Clone, Debug)]
pub struct AccountPolicy {
    /// A disabled account is neither routed from nor to.
    pub enabled: bool,
    /// Its granted rights.
    pub rights: Rights,
    /// What its network can carry.
    pub capabilities: Capabilities,
    /// Its network's limits.
    pub limits: Limits,
    /// Its own `remote_nick_format`, overriding the general one.
    pub remote_nick_format: Option<String>,
}

/// An event on its way to one destination, as sealed into the outbox: the event as it arrived,
/// plus its relations as core keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoutedEvent {
    /// The event, with the origin's ids.
    pub event: Event,
    /// The origin account.
    pub origin: AccountId,
    /// The link carrying it to this destination.
    pub link: String,
    /// The replied-to event.
    pub reply_to: Option<EventKey>,
    /// The thread root.
    pub thread_root: Option<EventKey>,
    /// The edited, deleted or reacted-to event.
    pub target: Option<EventKey>,
    /// A deletion by someone other than the target's author (a room moderator's): only routed
    /// when `general.bridge_moderation` allows it, and only applied where the destination
    /// account has `delete`.
    #[serde(default)]
    pub moderation: bool,
}

/// Where an inbound event goes, decided before anything is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// To these destinations (never empty).
    To(Destinations),
    /// Its room feeds no link.
    Unrouted,
    /// Not routed, for this fixed reason.
    Refused(&'static str),
}

/// Steps 1 and 2 of routing, with no side effects: the origin account's right to read, the
/// table's destinations, and only those that can carry the event's kind at all.
pub fn plan(
    table: &table::RouteTable,
    policies: &Policies,
    account: &AccountId,
    event: &Event,
) -> Plan {
    match policies.get(account) {
        Some(p) if p.enabled && p.rights.read => {}
        _ => return Plan::Refused("no_read_right"),
    }
    if matches!(event.kind, EventKind::Typing(_)) {
        // Typing notices are ephemeral: never queued durably.
        return Plan::Refused("typing_not_relayed");
    }
    let Some(linked) = table.shared(account.as_str(), event.room.as_str()) else {
        return Plan::Unrouted;
    };
    if !degrade::depends_on_capabilities(&event.kind) {
        // Every destination carries this kind in some form: no look-up per destination.
        return Plan::To(linked.clone());
    }
    let carries = |d: &table::Destination| {
        policies
            .get(&d.account)
            .is_some_and(|p| degrade::carried(&event.kind, &p.capabilities))
    };
    if linked.iter().all(carries) {
        // The common case: no copy, only a shared reference to the table's entry.
        return Plan::To(linked.clone());
    }
    let dests: Vec<table::Destination> = linked.iter().filter(|d| carries(d)).cloned().collect();
    if dests.is_empty() {
        Plan::Refused("not_carried")
    } else {
        Plan::To(dests.into())
    }
}

/// The ingest side of routing.
pub struct Router {
    /// Shared with the portal service, which replaces it when a link is made at run time.
    table: Arc<std::sync::RwLock<table::RouteTable>>,
    /// The policies and `[general]` in force (a reload replaces them).
    live: Arc<crate::live::Live>,
    store: Arc<dyn Store>,
    map: MessageMap,
    sealer: Arc<Sealer>,
    lanes: Lanes,
    /// Events held back (never waited for) while the message they name may still be on its way
    /// to their room: looked at again every [`PARK_STEP`], at most [`PARK_TRIES`] times.
    parked: std::sync::Mutex<std::collections::VecDeque<Parked>>,
}

/// An inbound event held back a moment: it names a message not in the map while a send to its
/// room is in flight (the named message may be that one, its id not recorded yet).
struct Parked {
    asker: Asker,
    event: Event,
    tries: u32,
    due: tokio::time::Instant,
}

/// How often a parked event is looked at again.
const PARK_STEP: std::time::Duration = std::time::Duration::from_millis(10);
/// How many times, at most (then it is routed with what is known).
const PARK_TRIES: u32 = 50;
/// How many events may be parked at once; beyond, they are routed with what is known.
const PARK_MAX: usize = 1024;

impl Router {
    /// A router over its table, the settings in force (policies; `general.bridge_moderation`
    /// lets deletions by someone other than the author cross), the store and the delivery lanes.
    pub fn new(
        table: Arc<std::sync::RwLock<table::RouteTable>>,
        live: Arc<crate::live::Live>,
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        lanes: Lanes,
    ) -> Self {
        Self {
            table,
            live,
            map: MessageMap::with_pending(store.clone(), lanes.pending_receipts()),
            store,
            sealer,
            lanes,
            parked: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Takes inbound events until `intake` is cancelled or every sender is gone; then answers
    /// whatever is still queued with [`EmitError::ShuttingDown`]. Whatever is queued when the
    /// router looks (up to [`INGEST_BATCH`] events) is stored in one transaction.
    pub async fn run(self, mut rx: mpsc::Receiver<Inbound>, intake: CancellationToken) {
        let mut batch = Vec::with_capacity(INGEST_BATCH);
        loop {
            let next_due = self.next_due();
            tokio::select! {
                biased;
                _ = intake.cancelled() => break,
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)),
                    if next_due.is_some() => {
                    self.retry_parked(false).await;
                }
                n = rx.recv_many(&mut batch, INGEST_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.ingest_all(&mut batch).await;
                }
            }
        }
        // What is parked is routed with what is known now, and stored.
        self.retry_parked(true).await;
        rx.close();
        while let Ok(inbound) = rx.try_recv() {
            if inbound.ack.is_none() {
                metrics::dropped(inbound.account.as_str(), "shutting_down");
                tracing::warn!(account = %inbound.account, "an inbound event arrived after intake stopped; not stored");
            }
            inbound.answer(Err(EmitError::ShuttingDown));
        }
    }

    /// Routes a run of inbound events, in order: the plain ones are stored together in one
    /// transaction; one whose relations must be looked up in the message map first waits for the
    /// events before it to be stored (it may answer one of them).
    async fn ingest_all(&self, batch: &mut Vec<Inbound>) {
        let mut group: Vec<(Prepared, Asker)> = Vec::with_capacity(batch.len());
        for Inbound {
            account,
            event,
            ack,
        } in batch.drain(..)
        {
            if has_relations(&event) && !group.is_empty() {
                self.commit(&mut group).await;
            }
            let asker = Asker { account, ack };
            match self.prepare(&asker.account, event, 0).await {
                Ok(Step::Answered(disposition)) => asker.answer(Ok(disposition)),
                Ok(Step::Store(prepared)) => group.push((*prepared, asker)),
                Ok(Step::Park(event)) => self.park(asker, *event, 1),
                Err(e) => asker.failed(e),
            }
        }
        self.commit(&mut group).await;
    }

    fn park(&self, asker: Asker, event: Event, tries: u32) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.push_back(Parked {
            asker,
            event,
            tries,
            due: tokio::time::Instant::now() + PARK_STEP,
        });
    }

    fn next_due(&self) -> Option<tokio::time::Instant> {
        let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.iter().map(|p| p.due).min()
    }

    /// Looks again at the parked events that are due (all of them when `all`, with no more
    /// parking), in the order they came.
    async fn retry_parked(&self, all: bool) {
        let now = tokio::time::Instant::now();
        let due: Vec<Parked> = {
            let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            let (ready, wait): (Vec<Parked>, Vec<Parked>) =
                parked.drain(..).partition(|p| all || p.due <= now);
            parked.extend(wait);
            ready
        };
        for Parked {
            asker,
            event,
            tries,
            ..
        } in due
        {
            let tries_left = if all { PARK_TRIES } else { tries };
            match self.prepare(&asker.account, event, tries_left).await {
                Ok(Step::Answered(disposition)) => asker.answer(Ok(disposition)),
                Ok(Step::Store(prepared)) => {
                    let mut one = vec![(*prepared, asker)];
                    self.commit(&mut one).await;
                }
                Ok(Step::Park(event)) => self.park(asker, *event, tries + 1),
                Err(e) => asker.failed(e),
            }
        }
    }

    /// Stores a group of prepared events in one transaction, hands their rows to the lanes and
    /// answers their connectors.
    async fn commit(&self, group: &mut Vec<(Prepared, Asker)>) {
        if group.is_empty() {
            return;
        }
        let items: Vec<(NewEvent, Vec<NewDelivery>)> = group
            .iter_mut()
            .map(|(p, _)| (p.new_event.clone(), p.deliveries.clone()))
            .collect();
        match self.store.accept_many(items).await {
            Ok(results) => {
                for ((prepared, asker), accepted) in group.drain(..).zip(results) {
                    let answer = self.queued(&asker.account, prepared, accepted);
                    asker.answer(Ok(answer));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for (_, asker) in group.drain(..) {
                    asker.failed(EmitError::NotStored(reason.clone()));
                }
            }
        }
    }

    /// Routes one inbound event from `account`, waiting until it is stored.
    pub async fn ingest(
        &self,
        account: &AccountId,
        event: Event,
    ) -> Result<Disposition, EmitError> {
        let prepared = match self.prepare(account, event, PARK_TRIES).await? {
            Step::Answered(disposition) => return Ok(disposition),
            Step::Store(prepared) => *prepared,
            // Not handed back once the tries are used up; never here.
            Step::Park(_) => return Err(EmitError::NotStored("parked".into())),
        };
        let accepted = self
            .store
            .accept(prepared.new_event.clone(), prepared.deliveries.clone())
            .await
            .map_err(|e| EmitError::NotStored(e.to_string()))?;
        Ok(self.queued(account, prepared, accepted))
    }

    /// After the store answered: hands the rows to their lanes; the disposition.
    fn queued(&self, account: &AccountId, prepared: Prepared, accepted: Accepted) -> Disposition {
        match accepted {
            Accepted::Duplicate => {
                metrics::dropped(account.as_str(), "duplicate");
                tracing::debug!(account = %account, kind = prepared.kind, reason = "duplicate", "inbound event not routed");
                Disposition::Duplicate
            }
            Accepted::Stored(ids) => {
                let n = ids.len();
                if n > 0 {
                    crate::status::traffic().received(account);
                }
                let key = prepared.new_event.key;
                for ((id, d), routed) in ids
                    .into_iter()
                    .zip(prepared.deliveries)
                    .zip(prepared.routed)
                {
                    metrics::queue_depth(d.account.as_str(), 1.0);
                    self.lanes.push(
                        OutboxEntry {
                            id,
                            key,
                            account: d.account,
                            room: d.room,
                            payload: d.payload,
                            queued_at: prepared.new_event.at,
                        },
                        Some(routed),
                    );
                }
                tracing::trace!(account = %account, key = %key, destinations = n, kind = prepared.kind, "event queued");
                Disposition::Queued { destinations: n }
            }
        }
    }

    /// Decides where an event goes and seals its deliveries, or answers it at once (refused,
    /// unrouted).
    /// Decides where `event` goes. `tries`: how often it was parked already; below
    /// [`PARK_TRIES`] an event whose relation is missing while a send to its room is in flight is
    /// handed back to be parked.
    async fn prepare(
        &self,
        account: &AccountId,
        event: Event,
        tries: u32,
    ) -> Result<Step, EmitError> {
        let kind = event.kind.name();
        if tries == 0 {
            metrics::event_in(account.as_str(), kind);
        }
        let refuse = |reason: &'static str| {
            metrics::dropped(account.as_str(), reason);
            tracing::debug!(account = %account, kind, reason, "inbound event not routed");
        };
        let settings = self.live.now();
        let planned = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            plan(&table, &settings.policies, account, &event)
        };
        let dests = match planned {
            Plan::To(dests) => dests,
            Plan::Unrouted => {
                refuse("unlinked");
                return Ok(Step::Answered(Disposition::Unrouted));
            }
            Plan::Refused(reason) => {
                refuse(reason);
                return Ok(Step::Answered(Disposition::Refused { reason }));
            }
        };
        let mut rel = Relations::default();
        if has_relations(&event) {
            rel = self
                .map
                .inbound(account, &event)
                .await
                .map_err(|e| EmitError::NotStored(e.to_string()))?;
            // An answer can overtake the record of the message it answers (the destination
            // showed the message at once): the map also looks at the receipts still on their way
            // to the store, so nothing here ever waits. Only while a send to this room is in
            // flight (the named message may be that one, its answer not taken in yet) is the
            // event handed back to be parked a moment; otherwise a relation not found now is
            // not found later either (a Telegram topic's root, a reaction to a message never
            // bridged) and the event goes at once.
            let missing = rel.unknown_target
                || (event.reply_to.is_some() && rel.reply_to.is_none())
                || (event.thread_root.is_some() && rel.thread_root.is_none());
            if missing
                && tries < PARK_TRIES
                && self.map.pending().sending_to(account, &event.room)
                && self
                    .parked
                    .lock()
                    .map(|p| p.len() < PARK_MAX)
                    .unwrap_or(false)
            {
                return Ok(Step::Park(Box::new(event)));
            }
            if rel.unknown_target {
                refuse("unknown_target");
                return Ok(Step::Answered(Disposition::Refused {
                    reason: "unknown_target",
                }));
            }
            if let Some(reason) = authorship(&event.kind, &rel, settings.general.bridge_moderation)
            {
                refuse(reason);
                return Ok(Step::Answered(Disposition::Refused { reason }));
            }
        }

        let new_event = NewEvent {
            key: event.key,
            account: account.clone(),
            room: event.room.clone(),
            remote_id: event.remote_id.clone(),
            sender_name: event.sender.name().to_owned(),
            sender_id: event.sender.id.as_str().to_owned(),
            thread_root: rel.thread_root,
            // Retention is dated by when the daemon received the event, never by the network's
            // clock (a timestamp from 1970 or 2100 would purge it at once or keep it for ever).
            at: Timestamp::now(),
        };
        let moderation = is_moderation(&event.kind, &rel);
        let mut routed = RoutedEvent {
            event,
            origin: account.clone(),
            link: String::new(),
            reply_to: rel.reply_to,
            thread_root: rel.thread_root,
            target: rel.target,
            moderation,
        };
        let mut deliveries = Vec::with_capacity(dests.len());
        // The lanes get the event as well as its sealed row, so they need not open it again; one
        // copy for each link it travels by (usually one for all its destinations).
        let mut shared: Vec<Arc<RoutedEvent>> = Vec::with_capacity(dests.len());
        let mut plain = Vec::with_capacity(256);
        for dest in dests.iter() {
            let same = shared.last().filter(|r| *r.link == *dest.link).cloned();
            let this = match same {
                Some(r) => r,
                None => {
                    routed.link.clear();
                    routed.link.push_str(&dest.link);
                    plain.clear();
                    serde_json::to_writer(&mut plain, &routed)
                        .map_err(|e| EmitError::NotStored(e.to_string()))?;
                    Arc::new(routed.clone())
                }
            };
            deliveries.push(NewDelivery {
                account: dest.account.clone(),
                room: dest.room.clone(),
                payload: self.sealer.seal(&plain),
            });
            shared.push(this);
        }
        Ok(Step::Store(Box::new(Prepared {
            new_event,
            deliveries,
            routed: shared,
            kind,
        })))
    }
}

/// How many queued inbound events the router stores in one transaction at most.
pub const INGEST_BATCH: usize = 256;

/// An event ready to be stored.
struct Prepared {
    new_event: NewEvent,
    deliveries: Vec<NewDelivery>,
    /// The event each delivery holds, in the same order.
    routed: Vec<Arc<RoutedEvent>>,
    kind: &'static str,
}

/// What preparing an event came to.
enum Step {
    /// Nothing to store: answered already (refused, unrouted).
    Answered(Disposition),
    /// To store.
    Store(Box<Prepared>),
    /// To look at again in a moment (see [`Parked`]).
    Park(Box<Event>),
}

/// Whether routing `event` needs the message map (a reply, a thread, or a target).
fn has_relations(event: &Event) -> bool {
    event.reply_to.is_some()
        || event.thread_root.is_some()
        || matches!(
            event.kind,
            EventKind::Edit { .. } | EventKind::Delete { .. } | EventKind::Reaction { .. }
        )
}

/// Whether `kind`, with its target resolved to `rel`, is a deletion by someone other than the
/// target's author (on the same network, that is a room moderator's; from another network, no
/// one's own).
fn is_moderation(kind: &EventKind, rel: &Relations) -> bool {
    matches!(kind, EventKind::Delete { .. }) && rel.target.is_some() && !rel.target_by_author
}

/// Why an edit or deletion whose target is known is not routed, if it is not: an edit only
/// from the target's author (Matrix's rule for `m.replace`, and every network's); a deletion by
/// anyone else only when `bridge_moderation`. A reaction's removal names the reacted message and
/// takes back the sender's own reaction (a destination removes the one it made for that sender),
/// so it is the author's by construction; a network that removes a reaction by deleting the
/// reaction event (Matrix's redaction) is a deletion, checked as one.
fn authorship(kind: &EventKind, rel: &Relations, bridge_moderation: bool) -> Option<&'static str> {
    if rel.target.is_none() || rel.target_by_author {
        return None;
    }
    match kind {
        EventKind::Edit { .. } => Some("not_author"),
        EventKind::Delete { .. } if !bridge_moderation => Some("moderation_not_bridged"),
        _ => None,
    }
}

/// The connector an inbound event came from, and where it waits for the answer (if it does).
struct Asker {
    account: AccountId,
    ack: Option<tokio::sync::oneshot::Sender<Result<Disposition, EmitError>>>,
}

impl Asker {
    fn answer(self, result: Result<Disposition, EmitError>) {
        if let Some(ack) = self.ack {
            let _ = ack.send(result);
        }
    }

    /// Answers an event that could not be stored; when its connector does not wait for the
    /// answer, the failure is logged (without content) and counted here.
    fn failed(self, e: EmitError) {
        if self.ack.is_none() {
            metrics::dropped(self.account.as_str(), "not_stored");
            tracing::error!(account = %self.account, error = %e, "an inbound event could not be stored; lost");
        }
        self.answer(Err(e));
    }
}

#[cfg(test)]
mod authorship_tests {
    use super::*;
    use passerelle_sdk::{Content, Text};

    fn known(by_author: bool) -> Relations {
        Relations {
            target: Some(EventKey::new()),
            target_by_author: by_author,
            ..Relations::default()
        }
    }

    fn edit() -> EventKind {
        EventKind::Edit {
            target: "m1".into(),
            content: Content::plain("changed"),
        }
    }

    fn delete() -> EventKind {
        EventKind::Delete {
            target: "m1".into(),
        }
    }

    #[test]
    fn only_the_author_edits_and_deletes_and_moderation_needs_the_operators_word() {
        for moderation in [false, true] {
            assert_eq!(authorship(&edit(), &known(true), moderation), None);
            assert_eq!(authorship(&delete(), &known(true), moderation), None);
            assert_eq!(
                authorship(&edit(), &known(false), moderation),
                Some("not_author"),
                "an edit by anyone else never crosses"
            );
        }
        assert_eq!(
            authorship(&delete(), &known(false), false),
            Some("moderation_not_bridged")
        );
        assert_eq!(authorship(&delete(), &known(false), true), None);
        assert!(is_moderation(&delete(), &known(false)));
        assert!(!is_moderation(&delete(), &known(true)));
        assert!(!is_moderation(&edit(), &known(false)));
    }

    #[test]
    fn a_reaction_and_its_removal_are_the_senders_own() {
        for removed in [false, true] {
            let kind = EventKind::Reaction {
                target: "m1".into(),
                key: Text::new("👍"),
                removed,
            };
            assert_eq!(authorship(&kind, &known(false), false), None);
            assert!(!is_moderation(&kind, &known(false)));
        }
    }

    #[tokio::test]
    async fn the_map_knows_the_author_by_account_and_id() {
        use crate::mapping::PendingReceipts;
        use crate::store::sqlite::SqliteStore;
        use passerelle_sdk::Sender;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let pending = PendingReceipts::default();
        let map = MessageMap::with_pending(store.clone(), pending.clone());
        let key = EventKey::new();
        let alice = NewEvent {
            key,
            account: "chat".into(),
            room: "r".into(),
            remote_id: Some("m1".into()),
            sender_name: "Alice".into(),
            sender_id: "u-alice".into(),
            thread_root: None,
            at: Timestamp::now(),
        };
        store.accept(alice, vec![]).await.unwrap();
        // The same message as bridged to another account (another server of the same network).
        pending.record(&"chat2".into(), &"r".into(), &"m1".into(), key);
        for (account, sender, by_author) in [
            ("chat", "u-alice", true),
            // The same display name would not do: another id.
            ("chat", "u-mallory", false),
            // The same id on another account is someone else.
            ("chat2", "u-alice", false),
        ] {
            let e = Event::new("r", Sender::new(sender), delete());
            let rel = map.inbound(&account.into(), &e).await.unwrap();
            assert_eq!(rel.target, Some(key));
            assert_eq!(rel.target_by_author, by_author, "{account} {sender}");
        }
    }
}
