//! Delivery lanes: one ordered lane per destination room, so a slow room stalls only itself.
//!
//! The durable outbox in the store *is* the queue. A lane holds a small bounded channel of rows
//! the router just stored; when the channel is full the lane is marked *spilled* and the router
//! stops pushing to it, and the lane reads its rows back from the store, in id order, until it has
//! caught up. Memory per lane is therefore bounded whatever the backlog, and order per room holds
//! (rows are delivered strictly by outbox id; a row seen twice is skipped by id).
//!
//! Each delivery: open the sealed row, translate relations through the message map, apply the
//! degrade rules, ask the route guard, hand the event to the destination connector and wait for its
//! answer. A receipt goes to the [`Recorder`], which maps the destination's id and deletes the row
//! (for every receipt that came in meanwhile, in one transaction) while the lane goes on with its
//! next row (in cluster mode it waits for the write, so a kill leaves at most one delivered row per
//! lane unrecorded); a lane about to deliver an event that refers to another (a reply, an edit)
//! first waits until its earlier receipts are written, so the referred message's id is found. A
//! retryable error retries the same row with backoff (keeping order); a permanent one is counted,
//! logged without content, and the row deleted.

use crate::mapping::{MessageMap, PendingReceipts};
use crate::metrics;
use crate::router::RoutedEvent;
use crate::router::degrade::{self, DestRelations};
use crate::router::guard::RouteGuard;
use crate::store::seal::Sealer;
use crate::store::{Completion, OutboxEntry, Store};
use dashmap::DashMap;
use passerelle_sdk::{AccountId, EventKind, Outbound, RoomId, SendError, Timestamp};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many rows a lane holds in memory before it spills to reading the store.
const LANE_CAPACITY: usize = 256;
/// How many rows a spilled lane reads from the store at once.
const RELOAD_BATCH: usize = 256;
/// How many receipts the recorder writes in one transaction at most.
const RECORD_BATCH: usize = 512;

/// What lanes ask of the [`Recorder`].
pub enum Record {
    /// A delivered row: delete it and map the destination's id.
    Done(Completion),
    /// Answered once everything asked before it is written.
    Flush(oneshot::Sender<()>),
}

/// Writes delivered rows in batches: one transaction for every receipt that came in while the
/// previous one was written. It stops once every lane (every sender) is gone, after writing what
/// it was given.
pub struct Recorder;

impl Recorder {
    /// Starts the recorder on `tracker`; lanes send to the returned queue. Each receipt written
    /// leaves `pending`.
    pub fn start(
        store: Arc<dyn Store>,
        pending: PendingReceipts,
        tracker: &TaskTracker,
    ) -> mpsc::Sender<Record> {
        let (tx, rx) = mpsc::channel(4 * RECORD_BATCH);
        tracker.spawn(Self::run(store, pending, rx));
        tx
    }

    async fn run(store: Arc<dyn Store>, pending: PendingReceipts, mut rx: mpsc::Receiver<Record>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        let mut done = Vec::with_capacity(RECORD_BATCH);
        let mut waiting = Vec::new();
        while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            for r in batch.drain(..) {
                match r {
                    Record::Done(c) => done.push(c),
                    Record::Flush(answer) => waiting.push(answer),
                }
            }
            if !done.is_empty() {
                let rows: Arc<[Completion]> = done.drain(..).collect();
                let n = rows.len();
                // Retry the store, never the sends: if it keeps failing, the rows stay queued and
                // are sent again after a restart (the repeats this allows are logged).
                for attempt in 1..=5u32 {
                    match store.complete_many(rows.clone()).await {
                        Ok(()) => {
                            for (_, mapped) in rows.iter() {
                                if let Some((_, account, room, remote)) = mapped {
                                    pending.written(account, room, remote);
                                }
                            }
                            break;
                        }
                        Err(e) if attempt == 5 => {
                            tracing::error!(error = %e, rows = n, "delivered, but the store failed to record it; they may be sent again after a restart");
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await
                        }
                    }
                }
            }
            for answer in waiting.drain(..) {
                let _ = answer.send(());
            }
        }
    }
}

/// Cluster mode's part in delivery: which destinations this instance delivers to, and the claim
/// under the destination's lease before every send ([`crate::cluster::Cluster`]).
#[async_trait::async_trait]
pub trait Fence: Send + Sync + 'static {
    /// Whether this instance owns `account` now.
    fn owns(&self, account: &AccountId) -> bool;
    /// Claims the queued row `outbox_id` for a send to `account`.
    async fn admit(
        &self,
        account: &AccountId,
        outbox_id: i64,
    ) -> Result<crate::cluster::Admit, crate::store::StoreError>;
}

#[async_trait::async_trait]
impl Fence for crate::cluster::Cluster {
    fn owns(&self, account: &AccountId) -> bool {
        self.holds(account).is_some()
    }
    async fn admit(
        &self,
        account: &AccountId,
        outbox_id: i64,
    ) -> Result<crate::cluster::Admit, crate::store::StoreError> {
        crate::cluster::Cluster::admit(self, account, outbox_id).await
    }
}

/// Everything a lane needs to deliver.
pub struct Delivery {
    /// The store (outbox and message map).
    pub store: Arc<dyn Store>,
    /// Opens sealed rows.
    pub sealer: Arc<Sealer>,
    /// The last check before every send (replaced when a link is made at run time).
    pub guard: Arc<std::sync::RwLock<RouteGuard>>,
    /// Every account's policy and `[general]`, as in force now (a reload replaces them).
    pub live: Arc<crate::live::Live>,
    /// Each running account's outbound queue (a reload adds and removes accounts).
    pub outbound: Arc<DashMap<AccountId, mpsc::Sender<Outbound>>>,
    /// Cancelled when lanes must stop (after the shutdown grace, before the connectors stop).
    pub stop: CancellationToken,
    /// Where receipts are written ([`Recorder::start`]).
    pub recorder: mpsc::Sender<Record>,
    /// Paste links for messages cut to a destination's lines, when `[pastes]` is set.
    pub pastes: Option<Arc<crate::pastes::Pastes>>,
    /// The deliveries given up on, as listed by `/dead-letters` and the Matrix admin room.
    pub dead_letters: passerelle_sdk::DeadLetterLog,
    /// Receipts answered and not yet written (shared with the recorder and the router's map).
    pub pending_receipts: PendingReceipts,
    /// Cluster mode: lanes run only for the accounts this instance owns, and claim each row
    /// under the lease before they send it. `None`: one daemon delivers everything.
    pub fence: Option<Arc<dyn Fence>>,
}

struct Lane {
    tx: mpsc::Sender<Queued>,
    spilled: Arc<AtomicBool>,
    /// Wakes an idle lane to read the store (rows another instance queued).
    wake: Arc<tokio::sync::Notify>,
}

/// A row on its way to its lane.
pub struct Queued {
    /// The row.
    pub entry: OutboxEntry,
    /// The event it holds, when known without opening it.
    pub routed: Option<Arc<RoutedEvent>>,
}

/// The set of lanes, created on first use.
#[derive(Clone)]
pub struct Lanes {
    lanes: Arc<DashMap<(AccountId, RoomId), Lane>>,
    delivery: Arc<Delivery>,
    tracker: TaskTracker,
}

impl Lanes {
    /// Lanes delivering through `delivery`; their tasks are tracked by `tracker`.
    pub fn new(delivery: Arc<Delivery>, tracker: TaskTracker) -> Self {
        Self {
            lanes: Arc::new(DashMap::new()),
            delivery,
            tracker,
        }
    }

    /// The receipts on their way to the store (for the router's message map).
    pub fn pending_receipts(&self) -> PendingReceipts {
        self.delivery.pending_receipts.clone()
    }

    /// Whether this instance delivers to `account` (always, outside cluster mode).
    fn delivers_to(&self, account: &AccountId) -> bool {
        self.delivery.fence.as_ref().is_none_or(|f| f.owns(account))
    }

    /// Starts the lane for a destination (it first delivers what the store holds for it).
    pub fn ensure(&self, account: &AccountId, room: &RoomId) {
        if self.delivers_to(account) {
            self.lane(account, room);
        }
    }

    /// Has the lane of a destination read the store again (rows another instance stored),
    /// starting it if needed.
    pub fn wake(&self, account: &AccountId, room: &RoomId) {
        if !self.delivers_to(account) {
            return;
        }
        let (_, spilled, wake) = self.lane(account, room);
        spilled.store(true, Ordering::SeqCst);
        wake.notify_one();
    }

    /// Hands a freshly stored row to its lane, with the event it holds (so the lane need not
    /// open the sealed row again) when the caller has it. In cluster mode a row for an account
    /// another instance owns is left to that instance (the store tells it).
    pub fn push(&self, entry: OutboxEntry, routed: Option<Arc<RoutedEvent>>) {
        if !self.delivers_to(&entry.account) {
            return;
        }
        let (tx, spilled, _) = self.lane(&entry.account, &entry.room);
        if spilled.load(Ordering::SeqCst) {
            return; // the lane will read it from the store
        }
        if tx.try_send(Queued { entry, routed }).is_err() {
            spilled.store(true, Ordering::SeqCst);
        }
    }

    fn lane(
        &self,
        account: &AccountId,
        room: &RoomId,
    ) -> (
        mpsc::Sender<Queued>,
        Arc<AtomicBool>,
        Arc<tokio::sync::Notify>,
    ) {
        if let Some(lane) = self.lanes.get(&(account.clone(), room.clone())) {
            return (lane.tx.clone(), lane.spilled.clone(), lane.wake.clone());
        }
        let entry = self
            .lanes
            .entry((account.clone(), room.clone()))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(LANE_CAPACITY);
                // A new lane starts spilled: its first act is to read what the store holds.
                let spilled = Arc::new(AtomicBool::new(true));
                let wake = Arc::new(tokio::sync::Notify::new());
                let task = LaneTask {
                    lanes: self.lanes.clone(),
                    own: tx.clone(),
                    wake: wake.clone(),
                    delivery: self.delivery.clone(),
                    account: account.clone(),
                    room: room.clone(),
                    rx,
                    spilled: spilled.clone(),
                    last: 0,
                    unrecorded: AtomicBool::new(false),
                };
                self.tracker.spawn(task.run());
                Lane { tx, spilled, wake }
            });
        (entry.tx.clone(), entry.spilled.clone(), entry.wake.clone())
    }
}

struct LaneTask {
    /// The set it is in, which it leaves when it ends (cluster mode: the account went elsewhere).
    lanes: Arc<DashMap<(AccountId, RoomId), Lane>>,
    /// Its own queue's sender, to leave the set only if it is still the lane there.
    own: mpsc::Sender<Queued>,
    wake: Arc<tokio::sync::Notify>,
    delivery: Arc<Delivery>,
    account: AccountId,
    room: RoomId,
    rx: mpsc::Receiver<Queued>,
    spilled: Arc<AtomicBool>,
    /// The highest outbox id delivered (or dropped) by this lane.
    last: i64,
    /// Whether receipts of this lane may still be on their way to the store.
    unrecorded: AtomicBool,
}

enum Outcome {
    Done,
    Retry(Duration),
    /// Try the same row again after this long without counting a try (the store is away).
    Wait(Duration),
    /// This instance no longer owns the destination: the lane ends, the row stays queued.
    Disowned,
}

impl LaneTask {
    async fn run(mut self) {
        self.deliver_while_owned().await;
        let own = self.own.clone();
        self.lanes
            .remove_if(&(self.account.clone(), self.room.clone()), |_, lane| {
                lane.tx.same_channel(&own)
            });
    }

    async fn deliver_while_owned(&mut self) {
        let stop = self.delivery.stop.clone();
        let wake = self.wake.clone();
        loop {
            if let Some(fence) = &self.delivery.fence
                && !fence.owns(&self.account)
            {
                return;
            }
            if self.spilled.swap(false, Ordering::SeqCst) {
                if !self.catch_up().await {
                    return;
                }
                continue;
            }
            let Queued { entry, routed } = tokio::select! {
                _ = stop.cancelled() => return,
                () = wake.notified() => continue,
                next = self.rx.recv() => match next {
                    Some(e) => e,
                    None => return,
                },
            };
            if entry.id <= self.last {
                continue;
            }
            let id = entry.id;
            if !self.deliver(entry, routed).await {
                return;
            }
            self.last = id;
        }
    }

    /// Delivers what the store holds after `last`. False when stopped.
    async fn catch_up(&mut self) -> bool {
        loop {
            let batch = match self
                .delivery
                .store
                .pending(&self.account, &self.room, self.last, RELOAD_BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(account = %self.account, error = %e, "cannot read the outbox; retrying");
                    self.spilled.store(true, Ordering::SeqCst);
                    return self.pause(Duration::from_secs(1)).await;
                }
            };
            if batch.is_empty() {
                return true;
            }
            for entry in batch {
                let id = entry.id;
                if !self.deliver(entry, None).await {
                    return false;
                }
                self.last = id;
            }
        }
    }

    /// Sleeps unless stopped first. False when stopped.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.delivery.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Delivers one row, retrying as needed, until it is done or given up on (too many tries,
    /// or too long in the outbox). False when stopped (the row stays queued).
    async fn deliver(&self, entry: OutboxEntry, routed: Option<Arc<RoutedEvent>>) -> bool {
        let mut attempt: u32 = 0;
        loop {
            if let Some(reason) = self.past_limits(&entry, attempt) {
                match self.give_up(&entry, reason, attempt).await {
                    Some(Outcome::Done) => {
                        metrics::queue_depth(self.account.as_str(), -1.0);
                        return true;
                    }
                    _ => {
                        if !self.pause(Duration::from_secs(1)).await {
                            return false;
                        }
                        continue;
                    }
                }
            }
            match self.attempt(&entry, routed.as_deref()).await {
                Some(Outcome::Done) => {
                    metrics::queue_depth(self.account.as_str(), -1.0);
                    return true;
                }
                Some(Outcome::Wait(after)) => {
                    if !self.pause(after).await {
                        return false;
                    }
                }
                Some(Outcome::Disowned) => return false,
                Some(Outcome::Retry(after)) => {
                    attempt = attempt.saturating_add(1);
                    let backoff = Duration::from_millis(250u64.saturating_mul(1 << attempt.min(7)));
                    if !self
                        .pause(after.max(backoff).min(Duration::from_secs(60)))
                        .await
                    {
                        return false;
                    }
                }
                None => return false,
            }
        }
    }

    /// Whether the row is past the tries or the age it may have, and which.
    fn past_limits(&self, entry: &OutboxEntry, attempts: u32) -> Option<&'static str> {
        let settings = self.delivery.live.now();
        let general = &settings.general;
        if attempts >= general.max_attempts.max(1) {
            return Some("max_attempts");
        }
        let age_ms = Timestamp::now().0.saturating_sub(entry.queued_at.0);
        (age_ms / 1000 >= general.max_queue_age_secs).then_some("max_age")
    }

    /// Gives a row up: moved to the dead letters (ids only), counted, logged without content.
    async fn give_up(
        &self,
        entry: &OutboxEntry,
        reason: &'static str,
        attempts: u32,
    ) -> Option<Outcome> {
        let now = Timestamp::now();
        if let Err(e) = self
            .delivery
            .store
            .dead_letter(entry, reason, attempts, now)
            .await
        {
            tracing::error!(error = %e, "cannot record a dead letter; retrying");
            return Some(Outcome::Retry(Duration::from_secs(1)));
        }
        metrics::dead_letter(self.account.as_str(), reason);
        let age_secs = now.0.saturating_sub(entry.queued_at.0) / 1000;
        tracing::warn!(
            account = %self.account, room = %self.room, key = %entry.key, id = entry.id,
            reason, attempts, age_secs,
            "delivery given up on (dead letter)"
        );
        self.delivery.dead_letters.push(passerelle_sdk::DeadLetter {
            id: entry.id,
            key: entry.key,
            account: self.account.clone(),
            room: self.room.clone(),
            reason: reason.to_owned(),
            attempts,
            queued_at: entry.queued_at,
            dead_at: now,
        });
        Some(Outcome::Done)
    }

    /// Drops a row for a fixed reason: counted, logged without content, removed. Drops the degrade
    /// rules decide (the destination can't carry it) are expected and logged at debug level; the
    /// others (refusals, damaged rows) at warn.
    async fn drop_row(&self, entry: &OutboxEntry, reason: &'static str) -> Option<Outcome> {
        metrics::dropped(self.account.as_str(), reason);
        let expected = matches!(
            reason,
            "no_edits" | "no_deletes" | "no_reactions" | "unknown_target" | "not_carried"
        );
        if expected {
            tracing::debug!(account = %self.account, room = %self.room, key = %entry.key, reason, "delivery dropped");
        } else {
            tracing::warn!(account = %self.account, room = %self.room, key = %entry.key, reason, "delivery dropped");
        }
        match self.delivery.store.complete(entry.id, None).await {
            Ok(()) => Some(Outcome::Done),
            Err(e) => {
                tracing::error!(error = %e, "cannot remove a dropped delivery; retrying");
                Some(Outcome::Retry(Duration::from_secs(1)))
            }
        }
    }

    /// One try. `None` when stopped while waiting. `known`: the event the row holds, when the
    /// router handed it over with the row (else the sealed row is opened).
    async fn attempt(&self, entry: &OutboxEntry, known: Option<&RoutedEvent>) -> Option<Outcome> {
        let d = &self.delivery;
        let opened: RoutedEvent;
        let routed: &RoutedEvent = match known {
            Some(r) => r,
            None => match d
                .sealer
                .open(&entry.payload)
                .ok()
                .and_then(|plain| serde_json::from_slice(&plain).ok())
            {
                Some(r) => {
                    opened = r;
                    &opened
                }
                None => return self.drop_row(entry, "corrupt_payload").await,
            },
        };
        let settings = d.live.now();
        let Some(policy) = settings.policies.get(&self.account) else {
            return self.drop_row(entry, "unknown_account").await;
        };
        if has_relations(routed) && self.unrecorded.swap(false, Ordering::AcqRel) {
            // The event refers to another, perhaps one this lane just delivered: its id on this
            // destination must be in the store before it is looked up.
            let (answer, written) = oneshot::channel();
            if d.recorder.send(Record::Flush(answer)).await.is_ok() {
                let _ = written.await;
            }
        }
        let rel = match self.relations(routed).await {
            Ok(rel) => rel,
            Err(e) => {
                tracing::error!(error = %e, "message map lookup failed; retrying");
                return Some(Outcome::Retry(Duration::from_secs(1)));
            }
        };
        let event = match degrade::adapt_with(
            routed,
            &self.room,
            policy,
            rel.clone(),
            &settings.general,
            None,
        ) {
            Ok(adapted) if adapted.cut && d.pastes.is_some() => {
                match self.with_paste(routed, policy, rel).await {
                    Some(event) => event,
                    None => adapted.event,
                }
            }
            Ok(adapted) => adapted.event,
            Err(reason) => return self.drop_row(entry, reason).await,
        };
        let checked = d.guard.read().unwrap_or_else(|e| e.into_inner()).check(
            (&routed.origin, &routed.event.room),
            (&self.account, &self.room),
            &event.kind,
        );
        if let Err(refusal) = checked {
            tracing::error!(
                origin = %routed.origin, account = %self.account, room = %self.room,
                reason = refusal.reason(), "route guard refused a delivery"
            );
            return self.drop_row(entry, refusal.reason()).await;
        }
        // A clone: no map guard is held while the send waits.
        let Some(sender) = d.outbound.get(&self.account).map(|s| s.clone()) else {
            if policy.enabled {
                // Configured and enabled, its connector not registered yet (starting, or
                // restarting for a new kind after a reload): the row waits.
                return Some(Outcome::Retry(Duration::from_secs(1)));
            }
            return self.drop_row(entry, "account_not_running").await;
        };
        // Cluster mode: claimed under the destination's lease, or not sent at all.
        if let Some(fence) = &d.fence {
            match fence.admit(&self.account, entry.id).await {
                Ok(crate::cluster::Admit::Go) => {}
                Ok(crate::cluster::Admit::Gone) => return Some(Outcome::Done),
                Ok(crate::cluster::Admit::Lost) => return Some(Outcome::Disowned),
                Err(e) => {
                    tracing::warn!(account = %self.account, error = %e, "cannot claim a delivery; waiting for the store");
                    return Some(Outcome::Wait(Duration::from_secs(1)));
                }
            }
        }
        // What the destination's id will stand for: a correction resent for an edit stands for
        // the edited message (answers to it answer that message); words about a reaction or a
        // deletion stand for nothing.
        let map_key = match (&routed.event.kind, &event.kind) {
            (EventKind::Edit { .. }, EventKind::Message(_)) => routed.target,
            (EventKind::Reaction { .. } | EventKind::Delete { .. }, EventKind::Message(_)) => None,
            _ => Some(entry.key),
        };
        let (outbound, answer) = Outbound::new(event, routed.origin.clone(), routed.link.clone());
        // Until its receipt is recorded below, an answer to this message may reach the router
        // before its id is known: the router holds such an answer back (not itself) meanwhile.
        let _in_flight = d.pending_receipts.send_begins(&self.account, &self.room);
        let started = Instant::now();
        tokio::select! {
            _ = d.stop.cancelled() => return None,
            sent = sender.send(outbound) => if sent.is_err() {
                return Some(Outcome::Retry(Duration::from_secs(1)));
            },
        }
        // Once handed over, the answer is awaited even while stopping (the daemon stops the
        // connectors only after the lanes), so a sent message is always recorded as sent. It is
        // awaited however long it takes: the connector may be reconnecting with the event still
        // queued, and handing the row over again would send it twice. One send in flight per row.
        let answer_timeout = Duration::from_secs(settings.general.answer_timeout_secs.max(1));
        let mut answer = answer;
        let mut waited = Duration::ZERO;
        let result = loop {
            match tokio::time::timeout(answer_timeout, &mut answer).await {
                Ok(r) => break r,
                Err(_) => {
                    waited += answer_timeout;
                    tracing::warn!(
                        account = %self.account, room = %self.room, key = %entry.key,
                        waited_secs = waited.as_secs(),
                        "no answer from the connector yet; still waiting (the message is not handed over again)"
                    );
                }
            }
        };
        match result {
            Ok(Ok(receipt)) => {
                metrics::send_latency(self.account.as_str(), started.elapsed().as_secs_f64());
                metrics::event_out(self.account.as_str());
                crate::status::traffic().delivered(&self.account);
                let mapped = receipt
                    .remote_id
                    .zip(map_key)
                    .map(|(id, key)| (key, self.account.clone(), self.room.clone(), id));
                if let Some((key, account, room, id)) = &mapped {
                    d.pending_receipts.record(account, room, id, *key);
                }
                // Delivered: the recorder writes it while this lane goes on. The recorder only
                // stops once every lane is gone, so this send fails only in a daemon that is
                // being torn down; the row then stays queued and is sent again at the next start.
                if d.recorder
                    .send(Record::Done((entry.id, mapped)))
                    .await
                    .is_err()
                {
                    tracing::error!(key = %entry.key, "delivered, but the recorder is gone; it may be sent again after a restart");
                } else if d.fence.is_some() {
                    // Cluster mode: the next send waits for this receipt to be written, so an
                    // instance killed mid-stream leaves at most one delivered row per lane for
                    // its successor to send again (the recorder still writes every lane's
                    // receipts of the moment in one transaction).
                    let (answer, written) = oneshot::channel();
                    if d.recorder.send(Record::Flush(answer)).await.is_ok() {
                        let _ = written.await;
                    }
                    return Some(Outcome::Done);
                }
                self.unrecorded.store(true, Ordering::Release);
                Some(Outcome::Done)
            }
            Ok(Err(SendError::RateLimited { retry_after })) => Some(Outcome::Retry(retry_after)),
            Ok(Err(e)) if e.is_retryable() => Some(Outcome::Retry(Duration::from_millis(500))),
            Ok(Err(e)) => self.drop_row(entry, e.reason()).await,
            // The connector went away without answering (it is restarting): try again.
            Err(_) => Some(Outcome::Retry(Duration::from_millis(500))),
        }
    }

    /// The event adapted again with a link to its whole text, once that is stored. `None` when
    /// it could not be (the message then goes without the link; the failure is logged).
    async fn with_paste(
        &self,
        routed: &RoutedEvent,
        policy: &crate::router::AccountPolicy,
        rel: DestRelations,
    ) -> Option<passerelle_sdk::Event> {
        let d = &self.delivery;
        let pastes = d.pastes.as_ref()?;
        let text = match &routed.event.kind {
            EventKind::Message(c) | EventKind::Edit { content: c, .. } => c.text.as_str(),
            _ => return None,
        };
        let link = match pastes
            .publish(routed.event.key, &self.account, &self.room, text)
            .await
        {
            Ok(link) => link,
            Err(e) => {
                tracing::error!(account = %self.account, error = %e, "cannot store a paste; the message goes without its link");
                return None;
            }
        };
        degrade::adapt_with(
            routed,
            &self.room,
            policy,
            rel,
            &d.live.now().general,
            Some(&link),
        )
        .ok()
        .map(|a| a.event)
    }

    async fn relations(
        &self,
        routed: &RoutedEvent,
    ) -> Result<DestRelations, crate::store::StoreError> {
        let map = MessageMap::new(self.delivery.store.clone());
        let mut rel = DestRelations::default();
        if let Some(key) = routed.reply_to {
            (rel.reply_to, rel.reply_sender) = map.outbound(key, &self.account, &self.room).await?;
        }
        if let Some(key) = routed.thread_root {
            (rel.thread_root, rel.thread_sender) =
                map.outbound(key, &self.account, &self.room).await?;
        }
        if let Some(key) = routed.target {
            (rel.target, rel.target_sender) = map.outbound(key, &self.account, &self.room).await?;
        }
        Ok(rel)
    }
}

/// Whether delivering `routed` looks up another event's id on the destination.
fn has_relations(routed: &RoutedEvent) -> bool {
    routed.reply_to.is_some() || routed.thread_root.is_some() || routed.target.is_some()
}

#[cfg(test)]
mod tests;
