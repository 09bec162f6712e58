//! One connection: initial presence, room joins (nick fallback, passwords, history only for
//! catch-up), the read/send loop, keep-alive, and the confirmation of every send.
//!
//! A send is answered only when the server has it: in a room, when the room echoes our message
//! back (with the id it stamped, which becomes the receipt); in a direct chat, when a ping sent
//! right after it is answered (the server handles a stream's stanzas in order). A send still
//! unconfirmed when the connection drops is answered `Disconnected`, and the daemon sends it
//! again on the next connection. After a reconnect each room is asked for the messages since the
//! last one seen (`catch_up_secs`); the daemon drops the ones it already has by their ids. So a
//! dropped connection or a server restart loses nothing and duplicates nothing.

mod inbound;
mod muc;
mod outbound;
mod puppets;
mod upload;

use self::upload::{Job, Step};
use puppets::Puppet;
pub use puppets::puppet_local;

use crate::config::{Mode, RoomKind, Settings, parse_room};
use crate::memory::{Known, Memory};
use crate::stanza::{self, Parsed, What};
use crate::transport::{self, Read, Stream};
use passerelle_sdk::Attachment;
use passerelle_sdk::fetch::Fetched;
use passerelle_sdk::{
    ConnectionState, ConnectorError, ConnectorIo, Content, EmitError, Event, EventKind,
    MembershipChange, MessageKind, Outbound, Receipt, RoomId, SendError, Sender, Text, Timestamp,
};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{DiscoInfoQuery, DiscoInfoResult, Identity};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::xmlstream::XmppStreamElement;

const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// How long shutdown waits for the confirmations of sends already made.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The features we answer disco#info queries with.
const FEATURES: [&str; 9] = [
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:ping",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:reply:0",
    "urn:xmpp:reactions:0",
    "urn:xmpp:message-retract:1",
    "urn:xmpp:sid:0",
    "urn:xmpp:fallback:0",
    "jabber:x:oob",
];

/// One room we serve.
struct Room {
    id: RoomId,
    /// Which of the configured nicks we are trying or have.
    nick_index: usize,
    nick: String,
    joined: bool,
    /// When our own presence came back (the history, then the subject, follow it).
    joined_at: Option<Instant>,
    /// Refused for good (wrong password, banned...): sends are refused.
    failed: Option<String>,
    /// The room sent the subject that closes the join (later subjects are changes).
    subject_seen: bool,
    /// Our occupant id, when the room gives them.
    occupant_id: Option<String>,
    /// Other occupants: nick → occupant id.
    occupants: HashMap<String, Option<String>>,
    /// Component mode: the puppets of other networks' people here, by their JID.
    puppets: HashMap<String, Puppet>,
    /// Component mode: our puppets' nicks here (their messages and presence are ours).
    puppet_nicks: HashMap<String, String>,
}

/// A send waiting for the server's confirmation.
struct Pending {
    outbound: Outbound,
    deadline: Instant,
}

/// A live connection.
pub struct Session<'s> {
    settings: &'s Settings,
    stream: Stream,
    me: FullJid,
    /// Our server, which keep-alive and confirmation pings go to.
    server: Jid,
    rooms: HashMap<BareJid, Room>,
    directs: HashMap<BareJid, RoomId>,
    memory: Memory,
    /// Sends awaiting confirmation, by (room address, our message id).
    pending: HashMap<(String, String), Pending>,
    /// Ping ids whose answers confirm direct-chat sends.
    barriers: HashMap<String, (String, String)>,
    next_id: u64,
    /// The upload service, when the server has one.
    upload: Option<crate::upload::Service>,
    /// Uploads in progress, and the slot requests they wait for.
    jobs: HashMap<u64, Job>,
    slot_iqs: HashMap<String, u64>,
    next_job: u64,
    steps_tx: mpsc::UnboundedSender<(u64, Step)>,
    steps_rx: mpsc::UnboundedReceiver<(u64, Step)>,
    /// Component mode (XEP-0114): stanzas name their sender; people get puppets.
    component: bool,
}

fn now_ms() -> u64 {
    Timestamp::now().0
}

impl<'s> Session<'s> {
    /// Connects, logs in, and joins every room.
    pub async fn open(
        settings: &'s Settings,
        io: &ConnectorIo,
    ) -> Result<Session<'s>, ConnectorError> {
        let (mut stream, me) = transport::open(settings, &io.account).await?;
        let mut rooms = HashMap::new();
        let mut directs = HashMap::new();
        for room in &io.rooms {
            match parse_room(room.as_str()) {
                Ok(RoomKind::Muc(jid)) => {
                    rooms.insert(
                        jid,
                        Room {
                            id: room.clone(),
                            nick_index: 0,
                            nick: settings.nicks[0].clone(),
                            joined: false,
                            joined_at: None,
                            failed: None,
                            subject_seen: false,
                            occupant_id: None,
                            occupants: HashMap::new(),
                            puppets: HashMap::new(),
                            puppet_nicks: HashMap::new(),
                        },
                    );
                }
                Ok(RoomKind::Direct(jid)) => {
                    directs.insert(jid, room.clone());
                }
                Err(why) => tracing::warn!(%room, %why, "not an XMPP room; skipped"),
            }
        }
        let memory = Memory::load(
            &io.state,
            rooms
                .values()
                .map(|r| r.id.as_str())
                .chain(directs.values().map(|r| r.as_str())),
        )
        .await;
        let server = Jid::new(me.domain().as_str()).map_err(|e| {
            ConnectorError::Disconnected(format!("the server bound a bad JID: {e}"))
        })?;
        let component = settings.mode == Mode::Component;
        let upload = match (&settings.upload_service, component) {
            // A component is no client of the server: only a configured service is used.
            (Some(jid), true) => Some(crate::upload::Service {
                jid: jid.clone(),
                max: settings.max_upload,
            }),
            (None, true) => None,
            (configured, false) => {
                crate::upload::discover(
                    &mut stream,
                    &server,
                    configured.as_ref(),
                    settings.max_upload,
                    // Within the stream's read timeout, so that a silent item can't make the
                    // stream itself time out.
                    settings.connect_timeout.min(settings.ping_interval),
                )
                .await?
            }
        };
        match &upload {
            Some(s) => {
                tracing::info!(service = %s.jid, max_bytes = s.max, "XMPP files are uploaded with HTTP File Upload")
            }
            None => tracing::info!("no XMPP upload service: files go out as links"),
        }
        let (steps_tx, steps_rx) = mpsc::unbounded_channel();
        let mut session = Session {
            settings,
            stream,
            me,
            server,
            rooms,
            directs,
            memory,
            pending: HashMap::new(),
            barriers: HashMap::new(),
            next_id: 0,
            upload,
            jobs: HashMap::new(),
            slot_iqs: HashMap::new(),
            next_job: 0,
            steps_tx,
            steps_rx,
            component,
        };
        // Available, so that direct messages (and those kept offline) are delivered to us.
        if !session.component {
            session.send(Presence::available()).await?;
        }
        let addresses: Vec<BareJid> = session.rooms.keys().cloned().collect();
        for room in addresses {
            session.join(&room).await?;
        }
        Ok(session)
    }

    /// The JID the server bound (client mode), or the bot's address (component mode).
    pub fn jid(&self) -> &FullJid {
        &self.me
    }

    /// Writes a stanza. A component names the sender of every stanza: the bot, unless set.
    async fn send(&mut self, stanza: impl Into<Stanza>) -> Result<(), ConnectorError> {
        let mut stanza = stanza.into();
        if self.component {
            let me = Some(Jid::from(self.me.clone()));
            match &mut stanza {
                Stanza::Message(m) if m.from.is_none() => m.from = me,
                Stanza::Presence(p) if p.from.is_none() => p.from = me,
                Stanza::Iq(iq) if iq.from().is_none() => *iq.from_mut() = me,
                _ => {}
            }
        }
        transport::send(&mut self.stream, stanza).await
    }

    fn fresh_id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("pss-{what}-{}", self.next_id)
    }

    /// Runs until the connection drops (`Err`) or shutdown (`Ok`).
    pub async fn run(mut self, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        let join_deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        let mut announced = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let settled = self.all_joins_settled();
            if !announced && (settled || tokio::time::Instant::now() >= join_deadline) {
                announced = true;
                for room in self
                    .rooms
                    .values()
                    .filter(|r| !r.joined && r.failed.is_none())
                {
                    tracing::warn!(room = %room.id, "the room has not answered the join yet; sends to it wait");
                }
                tracing::info!(account = %io.account, rooms = self.rooms.values().filter(|r| r.joined).count(), "XMPP rooms joined");
                io.status.set(ConnectionState::Connected);
            }
            tokio::select! {
                _ = io.shutdown.cancelled() => break Ok(()),
                read = transport::read(&mut self.stream) => {
                    let handled = match read {
                        Ok(r) => self.on_read(io, r).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = handled {
                        break Err(e);
                    }
                }
                Some(out) = io.outbound.recv(), if announced => {
                    if let Err(e) = self.on_outbound(out).await {
                        break Err(e);
                    }
                }
                Some((job, step)) = self.steps_rx.recv() => {
                    if let Err(e) = self.on_step(job, step).await {
                        break Err(e);
                    }
                }
                _ = tick.tick() => {
                    self.expire();
                    self.memory.save(&io.state).await;
                }
                _ = tokio::time::sleep_until(join_deadline), if !announced => {}
            }
        };
        match result {
            Ok(()) => {
                self.finish(io).await;
                Ok(())
            }
            Err(e) => {
                self.fail_pending();
                self.memory.save(&io.state).await;
                Err(e)
            }
        }
    }

    /// Shutdown: waits a little for the confirmations of sends already made, then leaves.
    async fn finish(&mut self, io: &mut ConnectorIo) {
        let until = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while !self.pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                read = transport::read(&mut self.stream) => match read {
                    Ok(r) => {
                        if self.on_read(io, r).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                },
            }
        }
        self.fail_pending();
        self.memory.save(&io.state).await;
        let mut leaving = Vec::new();
        for (address, room) in &self.rooms {
            for p in room.puppets.values().filter(|p| p.joined) {
                if let Ok(to) = address.with_resource_str(p.nick()) {
                    leaving.push(
                        Presence::new(PresenceType::Unavailable)
                            .with_from(Jid::from(p.jid.clone()))
                            .with_to(to),
                    );
                }
            }
            if self.component
                && room.joined
                && let Ok(to) = address.with_resource_str(&room.nick)
            {
                leaving.push(Presence::new(PresenceType::Unavailable).with_to(to));
            }
        }
        for presence in leaving {
            let _ = self.send(presence).await;
        }
        if !self.component {
            let _ = self.send(Presence::new(PresenceType::Unavailable)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }

    fn fail_pending(&mut self) {
        for (_, p) in self.pending.drain() {
            p.outbound.respond(Err(SendError::Disconnected));
        }
        for (_, j) in self.jobs.drain() {
            j.outbound.respond(Err(SendError::Disconnected));
        }
        for room in self.rooms.values_mut() {
            for p in room.puppets.values_mut() {
                for (out, _) in p.waiting.drain(..) {
                    out.respond(Err(SendError::Disconnected));
                }
            }
        }
        self.barriers.clear();
        self.slot_iqs.clear();
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<(String, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in late {
            if let Some(p) = self.pending.remove(&key) {
                tracing::warn!(room = %key.0, "the server did not confirm a send in time; the daemon will send it again");
                p.outbound.respond(Err(SendError::Disconnected));
            }
        }
    }

    async fn on_read(&mut self, io: &mut ConnectorIo, read: Read) -> Result<(), ConnectorError> {
        match read {
            Read::Idle => {
                let id = self.fresh_id("ping");
                let ping = Iq::from_get(id, Ping).with_to(self.server.clone());
                self.send(ping).await
            }
            Read::Malformed(why) => {
                tracing::warn!(error = %why, "a malformed stanza from the XMPP server was skipped");
                Ok(())
            }
            Read::Element(el) => match *el {
                XmppStreamElement::Stanza(Stanza::Message(m)) => self.on_message(io, m).await,
                XmppStreamElement::Stanza(Stanza::Presence(p)) => self.on_presence(io, p).await,
                XmppStreamElement::Stanza(Stanza::Iq(iq)) => self.on_iq(iq).await,
                _ => Ok(()),
            },
        }
    }

    async fn on_iq(&mut self, iq: Iq) -> Result<(), ConnectorError> {
        match iq {
            Iq::Get {
                from,
                to,
                id,
                payload,
            } => {
                let answering = to.filter(|_| self.component);
                let reply = if payload.is("ping", "urn:xmpp:ping") {
                    Iq::Result {
                        from: answering,
                        to: from,
                        id,
                        payload: None,
                    }
                } else if DiscoInfoQuery::try_from(payload.clone()).is_ok() {
                    let info = DiscoInfoResult {
                        node: None,
                        identities: vec![Identity::new("client", "bot", "en", "passerelle")],
                        features: FEATURES.iter().map(|f| f.to_string()).collect(),
                        extensions: vec![],
                    };
                    Iq::Result {
                        from: answering,
                        to: from,
                        id,
                        payload: Some(info.into()),
                    }
                } else {
                    let mut refusal = unavailable(from, id);
                    *refusal.from_mut() = answering;
                    refusal
                };
                self.send(reply).await
            }
            Iq::Set { from, to, id, .. } => {
                let mut refusal = unavailable(from, id);
                *refusal.from_mut() = to.filter(|_| self.component);
                self.send(refusal).await
            }
            Iq::Result { id, payload, .. } => {
                if let Some((room, sent)) = self.barriers.remove(&id) {
                    self.sent(&room, &sent, sent.clone());
                } else if let Some(job) = self.slot_iqs.remove(&id) {
                    let slot = payload
                        .ok_or_else(|| SendError::Rejected("an empty slot answer".into()))
                        .and_then(crate::upload::slot);
                    self.on_slot(job, slot);
                }
                Ok(())
            }
            Iq::Error { id, error, .. } => {
                if let Some(job) = self.slot_iqs.remove(&id) {
                    let e = if error.defined_condition == DefinedCondition::NotAcceptable {
                        SendError::TooLarge
                    } else {
                        SendError::Rejected(format!(
                            "the upload service refused: {:?}",
                            error.defined_condition
                        ))
                    };
                    self.on_slot(job, Err(e));
                } else if let Some((room, sent)) = self.barriers.remove(&id) {
                    // The server answered, so it had handled the message before.
                    self.sent(&room, &sent, sent.clone());
                } else {
                    tracing::debug!(condition = ?error.defined_condition, "an XMPP request was refused");
                }
                Ok(())
            }
        }
    }

    /// Our message `id` is in `room` (echoed by the room, or handled by the server): remembered
    /// by its `remote` id, so that corrections and retractions can name it and a retried send is
    /// not made twice; the send waiting for it, if any, is answered.
    fn sent(&mut self, room: &str, id: &str, remote: String) {
        self.memory.room_mut(room).remember(Known {
            remote: remote.clone(),
            origin: id.to_owned(),
            author: String::new(),
        });
        if let Some(p) = self.pending.remove(&(room.to_owned(), id.to_owned())) {
            p.outbound.respond(Ok(Receipt {
                remote_id: Some(remote.into()),
            }));
        }
    }

    async fn emit(&mut self, io: &ConnectorIo, room: &str, event: Event, seen_ms: u64) {
        match io.emitter.emit(event).await {
            Ok(_) => self.memory.room_mut(room).seen_at(seen_ms),
            Err(EmitError::ShuttingDown) => {}
            Err(e) => {
                tracing::warn!(%room, error = %e, "an XMPP event was not stored; catch-up after the next reconnect asks for it again")
            }
        }
    }
}

/// The condition of the error an error stanza carries.
fn error_condition(payloads: &[Element]) -> Option<DefinedCondition> {
    payloads
        .iter()
        .find_map(|e| StanzaError::try_from(e.clone()).ok())
        .map(|e| e.defined_condition)
}

fn unavailable(to: Option<Jid>, id: String) -> Iq {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "",
        ),
        payload: None,
    }
}
