//! The connector contract: a factory per kind builds a [`Connector`] from its typed config table;
//! the daemon runs it with a [`ConnectorIo`].
//!
//! A connector:
//! - owns its network client inside [`Connector::run`] and reconnects by itself where it can;
//! - emits each inbound event with [`Emitter::emit`] and, where its network lets it, acknowledges the
//!   event to the network only after `emit` returned (the daemon has then stored it durably);
//! - answers every [`Outbound`] with [`Outbound::respond`]: a [`Receipt`] or a typed [`SendError`]
//!   (an outbound dropped without an answer counts as a lost connection and is retried);
//! - reports its [`ConnectionState`] through [`StatusReporter`];
//! - returns `Ok(())` soon after [`ConnectorIo::shutdown`] is cancelled.

use crate::caps::{Capabilities, Limits};
use crate::error::{ConfigIssue, ConnectorError, EmitError, SendError};
use crate::event::Event;
use crate::ids::{AccountId, RemoteMessageId, RoomId};
use crate::state::StateHandle;
use futures::future::BoxFuture;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// What a factory knows when it builds a connector.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The account being built (the `[accounts.NAME]` key).
    pub account: AccountId,
    /// A directory the connector may keep files in (crypto stores and the like), private to the
    /// account. It may not exist yet.
    pub data_dir: PathBuf,
}

/// Builds connectors of one kind (`kind = "irc"`).
pub trait ConnectorFactory: Send + Sync + 'static {
    /// The `kind` value this factory answers to.
    fn kind(&self) -> &'static str;
    /// This kind's documented example: one or more `[accounts."NAME"]` tables with every option
    /// the kind accepts, set or commented out (`# key = value`) or named in the comments, each
    /// explained. Ship it as `example.toml` in the crate (`include_str!("../example.toml")`).
    /// `config.example.toml` holds it verbatim, and the daemon's tests check that it names every
    /// key [`ConnectorFactory::build`] accepts and that its tables pass `passerelle check`.
    fn example(&self) -> &'static str;
    /// Parses the account's own config table (the keys other than `kind`, `rights`, `enabled` and
    /// the core's own) and builds a connector. No network I/O here: `passerelle check` calls this.
    /// Every problem is returned at once, each with a key path relative to the account table.
    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>>;
    /// The commands this kind offers on the command line, run by
    /// `passerelle connector ACCOUNT COMMAND` through [`ConnectorFactory::run_command`].
    fn commands(&self) -> &'static [ConnectorCommand] {
        &[]
    }
    /// Runs one of [`ConnectorFactory::commands`] for an account of this kind: the text to print,
    /// or every problem (key paths relative to the account's table). No network I/O.
    fn run_command(
        &self,
        ctx: &CommandContext,
        command: &str,
        table: serde_json::Value,
    ) -> Result<String, Vec<ConfigIssue>> {
        let _ = (ctx, table);
        Err(vec![ConfigIssue::new(
            "kind",
            format!("this kind has no command {command:?}"),
        )])
    }

    /// What this kind reads of matterbridge's configuration, when it takes over one of its
    /// protocols (`passerelle import matterbridge`).
    fn matterbridge(&self) -> Option<&dyn crate::import::MatterbridgeImport> {
        None
    }
}

/// A command a connector kind offers (`passerelle connector ACCOUNT NAME`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectorCommand {
    /// What the operator types.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// An older top-level command that does the same (`passerelle ALIAS`), kept for scripts:
    /// it runs on the one account of this kind the command applies to, or the one `--account`
    /// names.
    pub alias: Option<&'static str>,
}

/// What a connector command knows besides the account's table.
#[derive(Clone, Debug)]
pub struct CommandContext {
    /// The account (the `[accounts.NAME]` key).
    pub account: AccountId,
    /// Where the daemon serves this account's callbacks (`http://ADDR/accounts/NAME`, from
    /// `http.public_listen`, else `http.listen`), when a listener is configured.
    pub callbacks_url: Option<String>,
}

/// Whose a room is: a conversation among many, or one person's private chat with the account
/// (a WhatsApp number, a Signal contact, a Telegram private chat, an XMPP `dm:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoomKind {
    /// A room of several people (a channel, a group, a MUC).
    #[default]
    Group,
    /// One person's private chat: what is said there is that person's. The daemon never lets
    /// one private room's messages reach another private room, or more than one link, unless
    /// the operator says so on the link (`private_fanout = true`), and never opens one as a
    /// portal.
    Private,
}

/// A configured connection to one network account.
pub trait Connector: Send + 'static {
    /// What the network can carry.
    fn capabilities(&self) -> Capabilities;
    /// The network's size limits.
    fn limits(&self) -> Limits {
        Limits::default()
    }
    /// Checks a room name from a link before anything runs (`passerelle check` reports the
    /// answer under the link's key path). `Err` says, without secrets, why it can't be a room here.
    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        let _ = room;
        Ok(())
    }
    /// Whose `room` is, from its name alone (called for every room of the links, before
    /// anything runs). A connector whose network has private chats must say which rooms are
    /// one: the default, `Group`, is right only for networks without them.
    fn room_kind(&self, room: &RoomId) -> RoomKind {
        let _ = room;
        RoomKind::Group
    }
    /// Whether this account's users may open rooms of `account` as portals
    /// ([`crate::Links::open`]); the daemon refuses any other portal, and drops a kept one
    /// that is no longer allowed when it starts. Default: none.
    fn opens_portals_to(&self, account: &AccountId) -> bool {
        let _ = account;
        false
    }
    /// Whether [`Connector::run`] follows [`ConnectorIo::room_updates`]: joins the rooms a
    /// reload adds and leaves the ones it removes, on the connection it has. Default `false`: the
    /// daemon then restarts the account when its rooms change.
    fn follows_room_changes(&self) -> bool {
        false
    }
    /// Cluster mode: the checks of this account's callbacks (webhooks, appservice transactions)
    /// that any instance runs on a call it received, so that a call reaching an instance that
    /// does not run the account is proved, kept and answered there (see [`crate::relay`]).
    /// Built from the configuration alone. Default: none (such calls are served only where the
    /// account runs).
    fn relay(&self, account: &AccountId) -> Option<std::sync::Arc<dyn crate::relay::Relay>> {
        let _ = account;
        None
    }
    /// Runs until shutdown is signalled (then `Ok`) or a failure the connector can't mend itself
    /// (then the error; the daemon rebuilds and restarts it with backoff when it is retryable).
    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
}

/// Everything a running connector talks to.
pub struct ConnectorIo {
    /// This connector's account.
    pub account: AccountId,
    /// The rooms the links place on this account, which the connector should join or watch, as
    /// they were when this run started.
    pub rooms: Vec<RoomId>,
    /// The rooms as a configuration reload changes them, for a connector that
    /// [follows room changes](Connector::follows_room_changes).
    pub room_updates: RoomUpdates,
    /// Hands inbound events to the daemon.
    pub emitter: Emitter,
    /// Events the daemon asks the connector to send. Kept by the daemon across restarts of the
    /// connector, so nothing queued is lost when it reconnects.
    pub outbound: OutboundQueue,
    /// Connector-private persistent state.
    pub state: StateHandle,
    /// Where the connector reports its connection state.
    pub status: StatusReporter,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// Where the connector may serve HTTP endpoints on the daemon's listener.
    pub http: crate::http::HttpMount,
    /// What the daemon runs: accounts and their states, links.
    pub daemon: crate::daemon_view::DaemonView,
    /// Asks the daemon for links made at run time (portals).
    pub links: crate::links::Links,
}

/// The rooms of an account as reloads change them.
#[derive(Clone, Debug)]
pub struct RoomUpdates(watch::Receiver<Vec<RoomId>>);

impl RoomUpdates {
    /// Updates and the sender that makes them (the daemon keeps the sender).
    pub fn new(rooms: Vec<RoomId>) -> (watch::Sender<Vec<RoomId>>, Self) {
        let (tx, rx) = watch::channel(rooms);
        (tx, Self(rx))
    }

    /// Updates from `rx` (what it has seen counts as seen).
    pub fn from_receiver(rx: watch::Receiver<Vec<RoomId>>) -> Self {
        Self(rx)
    }

    /// Updates that never come (a test harness, a daemon that never reloads).
    pub fn fixed(rooms: Vec<RoomId>) -> Self {
        Self::new(rooms).1
    }

    /// The next set of rooms, once it differs from the one last seen; pending for ever once no
    /// more can come.
    pub async fn changed(&mut self) -> Vec<RoomId> {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.0.borrow_and_update().clone()
    }

    /// The rooms now.
    pub fn current(&self) -> Vec<RoomId> {
        self.0.borrow().clone()
    }
}

/// What the daemon did with an inbound event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Stored durably and queued for this many destinations.
    Queued {
        /// How many rooms it will be sent to.
        destinations: usize,
    },
    /// Seen before (same account, room and remote id), or our own message coming back: dropped.
    Duplicate,
    /// The room is linked nowhere (or only as a destination): nothing to do.
    Unrouted,
    /// Refused by rights or policy; the reason is content-free.
    Refused {
        /// Why, for logs and metrics.
        reason: &'static str,
    },
}

/// One inbound event on its way to the daemon, with the channel its disposition comes back on.
#[derive(Debug)]
pub struct Inbound {
    /// The account it came from.
    pub account: AccountId,
    /// The event, with ids of the origin account.
    pub event: Event,
    /// Answered once the event is durably stored (or refused); `None` when the connector handed
    /// it over without waiting ([`Emitter::hand_over`]), and the daemon logs a failure itself.
    pub ack: Option<oneshot::Sender<Result<Disposition, EmitError>>>,
}

impl Inbound {
    /// Answers the connector, when it waits for an answer.
    pub fn answer(self, result: Result<Disposition, EmitError>) {
        if let Some(ack) = self.ack {
            let _ = ack.send(result);
        }
    }
}

/// The acknowledgement of an event handed over with [`Emitter::submit`]: resolves once the daemon
/// stored (or refused) it. Dropping it does not take the event back.
#[derive(Debug)]
pub struct EmitAck(oneshot::Receiver<Result<Disposition, EmitError>>);

impl std::future::Future for EmitAck {
    type Output = Result<Disposition, EmitError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(EmitError::ShuttingDown)))
    }
}

/// Hands inbound events to the daemon. Cheap to clone, for connectors that read in several tasks.
#[derive(Clone, Debug)]
pub struct Emitter {
    account: AccountId,
    tx: mpsc::Sender<Inbound>,
}

impl Emitter {
    /// An emitter for `account` sending into `tx` (the daemon's and the testkit's constructor).
    pub fn new(account: AccountId, tx: mpsc::Sender<Inbound>) -> Self {
        Self { account, tx }
    }

    /// The account this emitter hands events in for.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// Hands `event` to the daemon and waits until it is durably stored or refused. Waits (applying
    /// backpressure) while the daemon's inbound queue is full.
    pub async fn emit(&self, event: Event) -> Result<Disposition, EmitError> {
        self.submit(event).await?.await
    }

    /// Hands `event` to the daemon, in order, and returns once it is queued, with its
    /// acknowledgement to await. A connector that reads faster than one event per store can
    /// submit a run of events and await their acknowledgements in the same order: the daemon
    /// then stores the run in one transaction (as with [`Emitter::hand_over`]), and each event is
    /// still acknowledged only once stored (as with [`Emitter::emit`]). Waits only while the
    /// daemon's inbound queue is full (backpressure).
    pub async fn submit(&self, event: Event) -> Result<EmitAck, EmitError> {
        let (ack, answer) = oneshot::channel();
        let inbound = Inbound {
            account: self.account.clone(),
            event,
            ack: Some(ack),
        };
        self.tx
            .send(inbound)
            .await
            .map_err(|_| EmitError::ShuttingDown)?;
        Ok(EmitAck(answer))
    }

    /// Hands `event` to the daemon without waiting for it to be stored: the next event can be read
    /// at once, and the daemon stores a run of them in one transaction. Order is kept. Waits only
    /// while the daemon's inbound queue is full (backpressure).
    ///
    /// For networks that cannot deliver an event again anyway (IRC), so waiting for the store
    /// would only slow the reader; a network that redelivers unacknowledged events must use
    /// [`Emitter::emit`] and acknowledge only after it returned. A failure to store is logged
    /// by the daemon (without content) and counted.
    pub async fn hand_over(&self, event: Event) -> Result<(), EmitError> {
        let inbound = Inbound {
            account: self.account.clone(),
            event,
            ack: None,
        };
        self.tx
            .send(inbound)
            .await
            .map_err(|_| EmitError::ShuttingDown)
    }
}

/// The answer to a successful send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The id the destination gave the message, when it gives one. With it, later replies, edits,
    /// deletes and reactions can be translated to this message.
    pub remote_id: Option<RemoteMessageId>,
}

/// One event the daemon asks a connector to send.
#[derive(Debug)]
pub struct Outbound {
    /// The event, already translated to the destination: `room` is the destination room, relations
    /// are ids on this account, and content is adapted to the connector's capabilities.
    pub event: Event,
    /// The account the event came from.
    pub origin: AccountId,
    /// The name of the link that carries it (matterbridge's "gateway").
    pub link: String,
    reply: oneshot::Sender<Result<Receipt, SendError>>,
}

impl Outbound {
    /// A request and the receiver its answer arrives on.
    pub fn new(
        event: Event,
        origin: AccountId,
        link: String,
    ) -> (Self, oneshot::Receiver<Result<Receipt, SendError>>) {
        let (reply, answer) = oneshot::channel();
        (
            Self {
                event,
                origin,
                link,
                reply,
            },
            answer,
        )
    }

    /// Answers the request. The daemon may have stopped waiting; that is not an error.
    pub fn respond(self, result: Result<Receipt, SendError>) {
        let _ = self.reply.send(result);
    }

    /// Whether nobody waits for the answer any more (the daemon stopped waiting): such an event
    /// must not be sent.
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The queue of [`Outbound`] events a connector sends. [`OutboundQueue::recv`] never gives an
/// event whose answer nobody waits for any more: the daemon hands each row over once and waits
/// for its answer, and an event it gave up on (at shutdown) is left out rather than sent with
/// no one to record it, which would send it twice.
#[derive(Debug)]
pub struct OutboundQueue {
    rx: mpsc::Receiver<Outbound>,
}

impl OutboundQueue {
    /// The queue over the daemon's channel.
    pub fn new(rx: mpsc::Receiver<Outbound>) -> Self {
        Self { rx }
    }

    /// The next event to send, or `None` once the daemon has closed the queue. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            let next = self.rx.recv().await?;
            if next.is_abandoned() {
                tracing::debug!(
                    key = %next.event.key,
                    "an outbound event nobody waits for any more is not sent"
                );
                continue;
            }
            return Some(next);
        }
    }
}

/// A connector's connection state, shown by `/readyz` and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not yet connected, or reconnecting.
    Connecting,
    /// Connected and in its rooms.
    Connected,
    /// Lost and not currently trying (waiting for backoff).
    Disconnected,
    /// Stopped for good (fatal error or shutdown).
    Stopped,
}

/// Where a connector reports its [`ConnectionState`].
#[derive(Clone, Debug)]
pub struct StatusReporter {
    tx: watch::Sender<ConnectionState>,
}

impl StatusReporter {
    /// A reporter and the receiver the daemon watches.
    pub fn new() -> (Self, watch::Receiver<ConnectionState>) {
        let (tx, rx) = watch::channel(ConnectionState::Connecting);
        (Self { tx }, rx)
    }
    /// Reports a new state.
    pub fn set(&self, state: ConnectionState) {
        self.tx.send_replace(state);
    }
    /// The last reported state.
    pub fn get(&self) -> ConnectionState {
        *self.tx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Content, EventKind, Sender};

    fn outbound(text: &str) -> (Outbound, oneshot::Receiver<Result<Receipt, SendError>>) {
        let event = Event::new(
            "#a",
            Sender::new("u"),
            EventKind::Message(Content::plain(text)),
        );
        Outbound::new(event, "origin".into(), "l".into())
    }

    #[tokio::test]
    async fn an_event_nobody_waits_for_is_never_given_to_the_connector() {
        let (tx, rx) = mpsc::channel(4);
        let mut queue = OutboundQueue::new(rx);
        let (given_up, answer) = outbound("first");
        drop(answer);
        let (waited_for, _answer) = outbound("second");
        let key = waited_for.event.key;
        tx.send(given_up).await.unwrap();
        tx.send(waited_for).await.unwrap();
        drop(tx);
        assert_eq!(queue.recv().await.map(|o| o.event.key), Some(key));
        assert!(queue.recv().await.is_none());
    }
}
