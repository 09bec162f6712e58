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

use crate::config::{Mode, RoomKind, Settings, parse_room};
use crate::memory::{Known, Memory};
use crate::stanza::{self, Parsed, What};
use crate::transport::{self, Read, Stream};
use crate::upload;
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

/// Component mode: one person from another network in one room, under their own JID and name.
struct Puppet {
    jid: FullJid,
    /// Their name, and the nicks tried in turn when it is taken.
    nicks: Vec<String>,
    nick_index: usize,
    joined: bool,
    /// The room refused them: their messages go through the bridge's own occupant, named.
    failed: bool,
    /// Sends waiting for the join.
    waiting: Vec<(Outbound, Message)>,
}

impl Puppet {
    fn nick(&self) -> &str {
        self.nicks
            .get(self.nick_index)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A puppet's local part: the origin account and the person's id there, each byte outside
/// `[a-z0-9._-]` written `=XX`, so that different people never share an address.
pub fn puppet_local(origin: &str, id: &str) -> String {
    let mut out = String::new();
    for b in origin
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(id.bytes())
    {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    out
}

impl Room {
    /// Joined, and the join's history is through (the subject closes it; a server that sends
    /// none gets a few seconds), so that our own earlier messages in it are known before we send.
    fn ready(&self) -> bool {
        self.joined
            && (self.subject_seen
                || self
                    .joined_at
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(5)))
    }
}

/// A send waiting for the server's confirmation.
struct Pending {
    outbound: Outbound,
    deadline: Instant,
}

/// A file upload in progress: the send it is for, the files still to put, the links of those
/// already up.
struct Job {
    outbound: Outbound,
    files: VecDeque<(String, Fetched)>,
    links: Vec<String>,
}

/// What an upload task reports.
enum Step {
    /// The message's files, fetched.
    Fetched(Result<Vec<(String, Fetched)>, SendError>),
    /// One file is up, at this link.
    Put(Result<String, SendError>),
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
    upload: Option<upload::Service>,
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
            (Some(jid), true) => Some(upload::Service {
                jid: jid.clone(),
                max: settings.max_upload,
            }),
            (None, true) => None,
            (configured, false) => {
                upload::discover(
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

    async fn join(&mut self, address: &BareJid) -> Result<(), ConnectorError> {
        let Some(room) = self.rooms.get(address) else {
            return Ok(());
        };
        let Ok(to) = address.with_resource_str(&room.nick) else {
            tracing::warn!(room = %room.id, "the nick is not usable as an XMPP resource; trying the next");
            return self.next_nick(address).await;
        };
        let last_seen = self
            .memory
            .room(room.id.as_str())
            .and_then(|m| m.last_seen_ms);
        let history = match last_seen {
            Some(seen) if !self.settings.catch_up.is_zero() => {
                let floor = now_ms().saturating_sub(self.settings.catch_up.as_millis() as u64);
                let since = seen.saturating_sub(1000).max(floor);
                match chrono::DateTime::from_timestamp_millis(since as i64) {
                    Some(t) => History::new()
                        .with_since(tokio_xmpp::parsers::date::DateTime(t.fixed_offset())),
                    None => History::new().with_maxstanzas(0),
                }
            }
            _ => History::new().with_maxstanzas(0),
        };
        let mut muc = Muc::new().with_history(history);
        if let Some(pw) = self.settings.room_passwords.get(address.as_str()) {
            muc = muc.with_password(pw.expose().to_owned());
        }
        let presence = Presence::available().with_to(to).with_payload(muc);
        self.send(presence).await
    }

    async fn next_nick(&mut self, address: &BareJid) -> Result<(), ConnectorError> {
        let Some(room) = self.rooms.get_mut(address) else {
            return Ok(());
        };
        room.nick_index += 1;
        match self.settings.nicks.get(room.nick_index) {
            Some(n) => {
                room.nick = n.clone();
                Box::pin(self.join(address)).await
            }
            None => {
                tracing::warn!(room = %room.id, "every configured nick is taken in the room; not joined");
                room.failed = Some("every nick is taken".into());
                Ok(())
            }
        }
    }

    fn all_joins_settled(&self) -> bool {
        self.rooms.values().all(|r| r.ready() || r.failed.is_some())
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
                        .and_then(upload::slot);
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

    async fn on_message(&mut self, io: &ConnectorIo, m: Message) -> Result<(), ConnectorError> {
        let Some(from) = m.from.clone() else {
            return Ok(());
        };
        let bare = from.to_bare();
        if m.type_ == MessageType::Error {
            let key = (
                bare.to_string(),
                m.id.as_ref().map(|i| i.0.clone()).unwrap_or_default(),
            );
            let dm_key = (format!("dm:{bare}"), key.1.clone());
            let condition = error_condition(&m.payloads);
            for k in [key, dm_key] {
                if let Some(p) = self.pending.remove(&k) {
                    let err = match &condition {
                        Some(DefinedCondition::ResourceConstraint)
                        | Some(DefinedCondition::PolicyViolation) => SendError::RateLimited {
                            retry_after: Duration::from_secs(5),
                        },
                        Some(DefinedCondition::NotAcceptable)
                        | Some(DefinedCondition::RemoteServerTimeout)
                        | Some(DefinedCondition::RecipientUnavailable) => SendError::Disconnected,
                        Some(DefinedCondition::ItemNotFound) => SendError::RoomNotFound,
                        other => SendError::Rejected(format!("the server refused it: {other:?}")),
                    };
                    tracing::warn!(room = %k.0, condition = ?condition, "the XMPP server refused a message");
                    p.outbound.respond(Err(err));
                }
            }
            return Ok(());
        }
        if self.rooms.contains_key(&bare) {
            let to_bot =
                m.to.as_ref()
                    .is_none_or(|t| t.to_bare() == self.me.to_bare());
            if m.type_ == MessageType::Groupchat && to_bot {
                return self.on_room_message(io, &bare, from, m).await;
            }
            if from.resource().is_some() && m.type_ != MessageType::Groupchat {
                tracing::info!(room = %bare, "a private message from a room occupant is not bridged");
            }
            return Ok(());
        }
        if let Some(room) = self.directs.get(&bare).cloned()
            && matches!(m.type_, MessageType::Chat | MessageType::Normal)
        {
            return self.on_direct_message(io, &room, &bare, m).await;
        }
        if m.type_ != MessageType::Headline {
            tracing::info!("a message from an XMPP address that no link serves is not bridged");
        }
        Ok(())
    }

    async fn on_room_message(
        &mut self,
        io: &ConnectorIo,
        address: &BareJid,
        from: Jid,
        m: Message,
    ) -> Result<(), ConnectorError> {
        let parsed = stanza::parse(&m, address);
        let Some(room) = self.rooms.get_mut(address) else {
            return Ok(());
        };
        let room_id = room.id.clone();
        let Some(nick) = from.resource().map(|r| r.to_string()) else {
            // From the room itself: moderation, or the subject.
            match parsed.what {
                What::Moderated { target } => {
                    let sender = Sender::new(address.as_str());
                    let event = Event::new(
                        room_id.clone(),
                        sender,
                        EventKind::Delete {
                            target: target.into(),
                        },
                    );
                    self.emit(io, room_id.as_str(), event, now_ms()).await;
                }
                What::Subject(s) => self.on_subject(io, address, None, s).await,
                _ => {}
            }
            return Ok(());
        };
        // Ours: the bot's occupant, one of this session's puppets, or (in catch-up history after
        // a reconnect, when the puppets are not back yet) a message we remember sending.
        let own = (nick == room.nick
            && (room.occupant_id.is_none() || parsed.occupant_id == room.occupant_id))
            || room.puppet_nicks.contains_key(&nick)
            || parsed.origin.as_deref().is_some_and(|o| {
                self.memory
                    .room(room.id.as_str())
                    .is_some_and(|m| m.by_origin("", o).is_some())
            });
        if own {
            if let Some(origin) = &parsed.origin {
                // Live or in catch-up history: either way the room has it.
                let remote = parsed.stanza_id.clone().unwrap_or_else(|| origin.clone());
                self.memory
                    .room_mut(room_id.as_str())
                    .seen_at(parsed.delay_ms.unwrap_or_else(now_ms));
                self.sent(room_id.as_str(), origin, remote);
            }
            return Ok(());
        }
        let author = parsed
            .occupant_id
            .clone()
            .unwrap_or_else(|| from.to_string());
        let mut sender = Sender::new(author.as_str());
        sender.display_name = Some(nick);
        if let What::Subject(s) = parsed.what {
            self.on_subject(io, address, Some(sender), s).await;
            return Ok(());
        }
        let seen = parsed.delay_ms.unwrap_or_else(now_ms);
        for event in self.translate(room_id.as_str(), &author, sender, &parsed) {
            self.emit(io, room_id.as_str(), event, seen).await;
        }
        Ok(())
    }

    async fn on_subject(
        &mut self,
        io: &ConnectorIo,
        address: &BareJid,
        sender: Option<Sender>,
        subject: String,
    ) {
        let Some(room) = self.rooms.get_mut(address) else {
            return;
        };
        if !room.subject_seen {
            // The subject that ends the join is the current one, not a change.
            room.subject_seen = true;
            return;
        }
        let room_id = room.id.clone();
        let sender = sender.unwrap_or_else(|| Sender::new(address.as_str()));
        let event = Event::new(
            room_id.clone(),
            sender,
            EventKind::Topic(Text::new(subject)),
        );
        self.emit(io, room_id.as_str(), event, now_ms()).await;
    }

    async fn on_direct_message(
        &mut self,
        io: &ConnectorIo,
        room: &RoomId,
        from: &BareJid,
        m: Message,
    ) -> Result<(), ConnectorError> {
        let parsed = stanza::parse(&m, &self.me.to_bare());
        let author = from.to_string();
        let sender = Sender::new(author.as_str());
        let seen = parsed.delay_ms.unwrap_or_else(now_ms);
        for event in self.translate(room.as_str(), &author, sender, &parsed) {
            self.emit(io, room.as_str(), event, seen).await;
        }
        Ok(())
    }

    /// The events an inbound message means, checked against the memory (a correction or
    /// retraction counts only from the author of the message it names).
    fn translate(&mut self, room: &str, author: &str, sender: Sender, p: &Parsed) -> Vec<Event> {
        let at = p.delay_ms.map(Timestamp);
        let stamp = |mut e: Event| {
            if let Some(at) = at {
                e.at = at;
            }
            e
        };
        let memory = self.memory.room_mut(room);
        let remote = p.remote_id().map(str::to_owned);
        let mut events = Vec::new();
        match &p.what {
            What::Message {
                text,
                emote,
                attachments,
                replaces,
            } => {
                let content = Content {
                    text: Text::new(text.clone()),
                    formatted: None,
                    kind: if *emote {
                        MessageKind::Emote
                    } else {
                        MessageKind::Normal
                    },
                    attachments: attachments.clone(),
                };
                let kind = match replaces {
                    None => EventKind::Message(content),
                    Some(origin) => match memory.by_origin(author, origin) {
                        Some(k) => EventKind::Edit {
                            target: k.remote.clone().into(),
                            content,
                        },
                        None => {
                            tracing::info!(%room, "a correction of a message we do not know (or not by its author) is not bridged");
                            return events;
                        }
                    },
                };
                if let (Some(remote), Some(origin), None) = (&remote, &p.origin, replaces) {
                    memory.remember(Known {
                        remote: remote.clone(),
                        origin: origin.clone(),
                        author: author.to_owned(),
                    });
                }
                let mut e = Event::new(room, sender, kind);
                e.remote_id = remote.map(Into::into);
                e.reply_to = p.reply_to.clone().map(Into::into);
                events.push(stamp(e));
            }
            What::Reactions { target, keys } => {
                let (added, removed) = memory.reactions_seen(author, target, keys.clone());
                for (key, removed) in added
                    .into_iter()
                    .map(|k| (k, false))
                    .chain(removed.into_iter().map(|k| (k, true)))
                {
                    let e = Event::new(
                        room,
                        sender.clone(),
                        EventKind::Reaction {
                            target: target.clone().into(),
                            key: Text::new(key),
                            removed,
                        },
                    );
                    events.push(stamp(e));
                }
            }
            What::Retract { target, by_origin } => {
                let known = if *by_origin {
                    memory.by_origin(author, target)
                } else {
                    memory.by_remote(target).filter(|k| k.author == author)
                };
                match known {
                    Some(k) => {
                        let mut e = Event::new(
                            room,
                            sender,
                            EventKind::Delete {
                                target: k.remote.clone().into(),
                            },
                        );
                        e.remote_id = remote.map(Into::into);
                        events.push(stamp(e));
                    }
                    None => {
                        tracing::info!(%room, "a retraction of a message we do not know (or not by its author) is not bridged")
                    }
                }
            }
            // Moderation counts only from the room itself (handled before); subjects apart.
            What::Moderated { .. } | What::Subject(_) | What::Nothing => {}
        }
        events
    }

    async fn on_presence(&mut self, io: &ConnectorIo, p: Presence) -> Result<(), ConnectorError> {
        let Some(from) = p.from.clone() else {
            return Ok(());
        };
        let address = from.to_bare();
        let Some(nick) = from.resource().map(|r| r.to_string()) else {
            return Ok(());
        };
        if let Some(to) = &p.to
            && self.component
            && to.to_bare() != self.me.to_bare()
        {
            let puppet = to.to_string();
            return self.on_puppet_presence(&address, &puppet, &nick, &p).await;
        }
        let Some(room) = self.rooms.get_mut(&address) else {
            return Ok(());
        };
        if room.puppet_nicks.contains_key(&nick) {
            return Ok(()); // one of ours coming or going: not someone joining
        }
        if p.type_ == PresenceType::Error {
            let condition = error_condition(&p.payloads);
            if room.joined {
                return Ok(());
            }
            if condition == Some(DefinedCondition::Conflict) {
                tracing::info!(room = %room.id, "the nick is taken in the room; trying the next");
                return self.next_nick(&address).await;
            }
            let why = match condition {
                Some(DefinedCondition::NotAuthorized) => {
                    "the room needs a password (room_passwords) or refused it".to_owned()
                }
                Some(DefinedCondition::Forbidden) => "we are banned from the room".to_owned(),
                Some(DefinedCondition::RegistrationRequired) => {
                    "the room is members-only and we are not a member".to_owned()
                }
                other => format!("the room refused us: {other:?}"),
            };
            tracing::warn!(room = %room.id, %why, "cannot join the XMPP room");
            room.failed = Some(why);
            return Ok(());
        }
        let user = p
            .payloads
            .iter()
            .find(|e| e.is("x", NS_MUC_USER))
            .and_then(|e| MucUser::try_from(e.clone()).ok());
        let statuses: Vec<Status> = user.as_ref().map(|u| u.status.clone()).unwrap_or_default();
        let occupant_id = p
            .payloads
            .iter()
            .find(|e| e.is("occupant-id", stanza::NS_OCCUPANT_ID))
            .and_then(|e| e.attr("id"))
            .map(str::to_owned);
        let is_self = statuses.contains(&Status::SelfPresence)
            || (nick == room.nick && !room.joined && p.type_ != PresenceType::Unavailable);
        if is_self {
            if p.type_ == PresenceType::Unavailable {
                if statuses.contains(&Status::NewNick) {
                    return Ok(());
                }
                room.joined = false;
                return Err(ConnectorError::Disconnected(format!(
                    "removed from the room {} ({:?})",
                    room.id, statuses
                )));
            }
            room.nick = nick;
            room.occupant_id = occupant_id;
            if !room.joined {
                room.joined = true;
                room.joined_at = Some(Instant::now());
                room.subject_seen = false;
                tracing::info!(room = %room.id, "joined the XMPP room");
            }
            if statuses.contains(&Status::RoomHasBeenCreated) {
                // A new room stays locked until configured: accept the default configuration.
                let id = self.fresh_id("create");
                let form = Element::builder("query", NS_MUC_OWNER)
                    .append(
                        Element::builder("x", "jabber:x:data")
                            .attr(
                                tokio_xmpp::minidom::rxml::NcName::try_from("type")
                                    .map_err(|e| ConnectorError::Fatal(e.to_string()))?,
                                "submit",
                            )
                            .build(),
                    )
                    .build();
                let iq = Iq::Set {
                    from: None,
                    to: Some(Jid::from(address.clone())),
                    id,
                    payload: form,
                };
                self.send(iq).await?;
            }
            return Ok(());
        }
        let author = occupant_id.clone().unwrap_or_else(|| from.to_string());
        let mut sender = Sender::new(author.as_str());
        sender.display_name = Some(nick.clone());
        let room_id = room.id.clone();
        let change = if p.type_ == PresenceType::Unavailable {
            if statuses.contains(&Status::NewNick) {
                room.occupants.remove(&nick);
                if let Some(new) = user
                    .as_ref()
                    .and_then(|u| u.items.first())
                    .and_then(|i| i.nick.clone())
                {
                    room.occupants.insert(new, occupant_id);
                }
                return Ok(());
            }
            if room.occupants.remove(&nick).is_none() {
                return Ok(());
            }
            if statuses.contains(&Status::Banned) {
                MembershipChange::Ban
            } else if statuses.contains(&Status::Kicked) {
                MembershipChange::Kick
            } else {
                MembershipChange::Leave
            }
        } else {
            if room.occupants.insert(nick, occupant_id).is_some() || !room.joined {
                // A presence update, or the roster sent before our own join completes.
                return Ok(());
            }
            MembershipChange::Join
        };
        let event = Event::new(room_id.clone(), sender, EventKind::Membership(change));
        self.emit(io, room_id.as_str(), event, now_ms()).await;
        Ok(())
    }

    /// Where a send to `room` goes, or why it can't go now.
    fn target(&self, room: &str) -> Result<(Jid, MessageType), SendError> {
        match parse_room(room) {
            Ok(RoomKind::Muc(jid)) => match self.rooms.get(&jid) {
                Some(r) if r.ready() => Ok((Jid::from(jid), MessageType::Groupchat)),
                Some(r) if r.failed.is_some() => Err(SendError::RoomNotFound),
                Some(_) => Err(SendError::Disconnected),
                None => Err(SendError::RoomNotFound),
            },
            Ok(RoomKind::Direct(jid)) if self.directs.contains_key(&jid) => {
                Ok((Jid::from(jid), MessageType::Chat))
            }
            _ => Err(SendError::RoomNotFound),
        }
    }

    /// Fetches a message's files (in a task, so the connection goes on being read); the next
    /// steps come back through [`Session::on_step`].
    fn start_upload(&mut self, out: Outbound, files: Vec<Attachment>, max: u64) {
        self.next_job += 1;
        let job = self.next_job;
        let private = self.settings.fetch_private;
        let steps = self.steps_tx.clone();
        tokio::spawn(async move {
            let mut fetched = Vec::new();
            for a in &files {
                match passerelle_sdk::fetch::fetch(a, max, private).await {
                    Ok(f) => fetched.push((a.name.as_str().to_owned(), f)),
                    Err(e) => {
                        let _ = steps.send((job, Step::Fetched(Err(e))));
                        return;
                    }
                }
            }
            let _ = steps.send((job, Step::Fetched(Ok(fetched))));
        });
        self.jobs.insert(
            job,
            Job {
                outbound: out,
                files: VecDeque::new(),
                links: Vec::new(),
            },
        );
    }

    /// The next step of an upload.
    async fn on_step(&mut self, job: u64, step: Step) -> Result<(), ConnectorError> {
        if !self.jobs.contains_key(&job) {
            return Ok(()); // answered already (the connection dropped meanwhile)
        }
        match step {
            Step::Fetched(Ok(files)) => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.files = files.into();
                }
                self.request_slot(job).await
            }
            Step::Put(Ok(link)) => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.links.push(link);
                }
                self.request_slot(job).await
            }
            Step::Fetched(Err(e)) | Step::Put(Err(e)) => self.upload_failed(job, e).await,
        }
    }

    /// Asks the service for a slot for the job's next file, or sends the message once every file
    /// is up.
    async fn request_slot(&mut self, job: u64) -> Result<(), ConnectorError> {
        let (Some(service), Some(j)) = (self.upload.clone(), self.jobs.get(&job)) else {
            return Ok(());
        };
        let Some((name, file)) = j.files.front() else {
            let links = j.links.clone();
            return self.finish_upload(job, links).await;
        };
        let request = upload::slot_request(
            &format!("pss-slot-{job}"),
            &service.jid,
            name,
            file.data.len() as u64,
            &file.mime,
        );
        self.slot_iqs.insert(format!("pss-slot-{job}"), job);
        self.send(request).await
    }

    /// The service answered a slot request: the file goes up in a task.
    fn on_slot(&mut self, job: u64, answer: Result<upload::Slot, SendError>) {
        let steps = self.steps_tx.clone();
        let Some((_, file)) = self.jobs.get_mut(&job).and_then(|j| j.files.pop_front()) else {
            return;
        };
        let answer = answer.map(|slot| {
            tokio::spawn(async move {
                let step = match upload::put(&slot, &file.mime, file.data).await {
                    Ok(()) => Step::Put(Ok(slot.get)),
                    Err(e) => Step::Put(Err(e)),
                };
                let _ = steps.send((job, step));
            })
        });
        if let Err(e) = answer {
            let _ = self.steps_tx.send((job, Step::Put(Err(e))));
        }
    }

    /// An upload that can't be made: a lost connection is answered so (the daemon retries);
    /// anything else sends the files' original links instead, so nothing is dropped.
    async fn upload_failed(&mut self, job: u64, e: SendError) -> Result<(), ConnectorError> {
        if e == SendError::Disconnected {
            if let Some(j) = self.jobs.remove(&job) {
                j.outbound.respond(Err(e));
            }
            return Ok(());
        }
        tracing::warn!(
            reason = e.reason(),
            "a file could not be uploaded to XMPP; its link is sent instead"
        );
        let links = self
            .jobs
            .get(&job)
            .and_then(|j| j.outbound.event.content())
            .map(|c| {
                c.attachments
                    .iter()
                    .filter(|a| !a.url.is_empty())
                    .map(|a| a.url.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        self.finish_upload(job, links).await
    }

    /// Sends the job's message with `links` (the uploaded files', or the original ones).
    async fn finish_upload(&mut self, job: u64, links: Vec<String>) -> Result<(), ConnectorError> {
        let Some(j) = self.jobs.remove(&job) else {
            return Ok(());
        };
        let out = j.outbound;
        let (to, type_) = match self.target(out.event.room.as_str()) {
            Ok(t) => t,
            Err(e) => {
                out.respond(Err(e));
                return Ok(());
            }
        };
        let Some(content) = out.event.content().cloned() else {
            return Ok(());
        };
        let direct = type_ == MessageType::Chat;
        let mut m = stanza::new_message(to, type_, &format!("pss-{}", out.event.key));
        stanza::set_text_and_links(
            &mut m,
            content.text.as_str(),
            content.kind == MessageKind::Emote,
            &links,
        );
        if let Some(target) = &out.event.reply_to {
            stanza::set_reply(&mut m, target.as_str(), None);
        }
        self.dispatch(out, m, direct).await
    }

    async fn on_outbound(&mut self, out: Outbound) -> Result<(), ConnectorError> {
        let room = out.event.room.as_str().to_owned();
        let (to, type_) = match self.target(&room) {
            Ok(t) => t,
            Err(e) => {
                out.respond(Err(e));
                return Ok(());
            }
        };
        let id = format!("pss-{}", out.event.key);
        if let Some(k) = self.memory.room(&room).and_then(|m| m.by_origin("", &id)) {
            // Sent before (the confirmation was lost with the connection) and seen in the room.
            let remote_id = Some(k.remote.clone().into());
            out.respond(Ok(Receipt { remote_id }));
            return Ok(());
        }
        let direct = type_ == MessageType::Chat;
        let mut m = stanza::new_message(to, type_, &id);
        let kind = out.event.kind.clone();
        match &kind {
            EventKind::Message(content) => {
                if content.text.len() > stanza::MAX_BODY_BYTES {
                    out.respond(Err(SendError::TooLarge));
                    return Ok(());
                }
                let files: Vec<Attachment> = content
                    .attachments
                    .iter()
                    .filter(|a| !a.url.is_empty())
                    .cloned()
                    .collect();
                if !files.is_empty()
                    && let Some(max) = self.upload.as_ref().map(|s| s.max)
                {
                    self.start_upload(out, files, max);
                    return Ok(());
                }
                let links: Vec<String> = files.iter().map(|a| a.url.as_str().to_owned()).collect();
                stanza::set_text_and_links(
                    &mut m,
                    content.text.as_str(),
                    content.kind == MessageKind::Emote,
                    &links,
                );
                if let Some(target) = &out.event.reply_to {
                    stanza::set_reply(&mut m, target.as_str(), None);
                }
            }
            EventKind::Edit { target, content } => {
                let origin = self
                    .memory
                    .room(&room)
                    .and_then(|mem| mem.by_remote(target.as_str()))
                    .filter(|k| k.author.is_empty())
                    .map(|k| k.origin.clone());
                let Some(origin) = origin else {
                    out.respond(Err(SendError::Rejected(
                        "only the bridge's own recent messages can be corrected".into(),
                    )));
                    return Ok(());
                };
                stanza::set_body(
                    &mut m,
                    content.text.as_str(),
                    content.kind == MessageKind::Emote,
                );
                stanza::set_replace(&mut m, &origin);
            }
            EventKind::Delete { target } => {
                let ours = self
                    .memory
                    .room(&room)
                    .and_then(|mem| mem.by_remote(target.as_str()))
                    .is_some_and(|k| k.author.is_empty());
                if !ours {
                    out.respond(Err(SendError::Rejected(
                        "only the bridge's own recent messages can be retracted".into(),
                    )));
                    return Ok(());
                }
                stanza::set_retract(&mut m, target.as_str());
            }
            EventKind::Reaction {
                target,
                key,
                removed,
            } => {
                let keys = self.memory.room_mut(&room).our_reaction(
                    target.as_str(),
                    out.event.sender.id.as_str(),
                    key.as_str(),
                    *removed,
                    self.component,
                );
                stanza::set_reactions(&mut m, target.as_str(), &keys);
            }
            other => {
                out.respond(Err(SendError::Unsupported(other.name())));
                return Ok(());
            }
        }
        self.dispatch(out, m, direct).await
    }

    /// Sends a built message: in component mode, from the sender's puppet (which first joins the
    /// room under their name; the send waits for that), else from the bridge's account.
    async fn dispatch(
        &mut self,
        out: Outbound,
        mut m: Message,
        direct: bool,
    ) -> Result<(), ConnectorError> {
        if !self.component {
            return self.send_built(out, m, direct).await;
        }
        let local = puppet_local(out.origin.as_str(), out.event.sender.id.as_str());
        let jid = match BareJid::new(&format!("{local}@{}", self.me.domain()))
            .and_then(|b| b.with_resource_str(&self.settings.resource))
        {
            Ok(j) => j,
            Err(e) => {
                out.respond(Err(SendError::Rejected(format!("no puppet address: {e}"))));
                return Ok(());
            }
        };
        let Some(address) = m.to.as_ref().map(|t| t.to_bare()) else {
            return Ok(());
        };
        if direct {
            m.from = Some(Jid::from(jid));
            return self.send_built(out, m, direct).await;
        }
        let key = jid.to_string();
        let Some(room) = self.rooms.get_mut(&address) else {
            out.respond(Err(SendError::RoomNotFound));
            return Ok(());
        };
        match room.puppets.get_mut(&key) {
            Some(p) if p.joined => {
                m.from = Some(Jid::from(p.jid.clone()));
                self.send_built(out, m, direct).await
            }
            Some(p) if p.failed => {
                let name = out.event.sender.name().to_owned();
                named(&mut m, &name);
                self.send_built(out, m, direct).await
            }
            Some(p) => {
                p.waiting.push((out, m));
                Ok(())
            }
            None => {
                let name = out.event.sender.name().trim().to_owned();
                let name = if name.is_empty() { local.clone() } else { name };
                let nicks = (0..4).map(|n| format!("{name}{}", "_".repeat(n))).collect();
                let puppet = Puppet {
                    jid,
                    nicks,
                    nick_index: 0,
                    joined: false,
                    failed: false,
                    waiting: vec![(out, m)],
                };
                room.puppet_nicks
                    .insert(puppet.nick().to_owned(), key.clone());
                room.puppets.insert(key.clone(), puppet);
                self.join_puppet(&address, &key).await
            }
        }
    }

    /// Sends a puppet's join: no history, the room's password if it has one.
    async fn join_puppet(&mut self, address: &BareJid, key: &str) -> Result<(), ConnectorError> {
        let Some(p) = self.rooms.get(address).and_then(|r| r.puppets.get(key)) else {
            return Ok(());
        };
        let Ok(to) = address.with_resource_str(p.nick()) else {
            return self
                .puppet_refused(address, key, "the name is not usable as a nick")
                .await;
        };
        let mut muc = Muc::new().with_history(History::new().with_maxstanzas(0));
        if let Some(pw) = self.settings.room_passwords.get(address.as_str()) {
            muc = muc.with_password(pw.expose().to_owned());
        }
        let presence = Presence::available()
            .with_from(Jid::from(p.jid.clone()))
            .with_to(to)
            .with_payload(muc);
        self.send(presence).await
    }

    /// What the room says to one of our puppets: joined (its waiting sends go), a nick taken
    /// (the next is tried), refused (its sends go through the bridge's occupant, named).
    async fn on_puppet_presence(
        &mut self,
        address: &BareJid,
        key: &str,
        nick: &str,
        p: &Presence,
    ) -> Result<(), ConnectorError> {
        let Some(room) = self.rooms.get_mut(address) else {
            return Ok(());
        };
        let Some(puppet) = room.puppets.get_mut(key) else {
            return Ok(());
        };
        if p.type_ == PresenceType::Error {
            let conflict = error_condition(&p.payloads) == Some(DefinedCondition::Conflict);
            if conflict && puppet.nick_index + 1 < puppet.nicks.len() {
                room.puppet_nicks.remove(puppet.nick());
                puppet.nick_index += 1;
                room.puppet_nicks
                    .insert(puppet.nick().to_owned(), key.to_owned());
                return self.join_puppet(address, key).await;
            }
            return self
                .puppet_refused(address, key, "the room refused the puppet")
                .await;
        }
        if nick != puppet.nick() {
            return Ok(());
        }
        if p.type_ == PresenceType::Unavailable {
            puppet.joined = false;
            return Ok(());
        }
        puppet.joined = true;
        let from = Jid::from(puppet.jid.clone());
        let waiting = std::mem::take(&mut puppet.waiting);
        for (out, mut m) in waiting {
            m.from = Some(from.clone());
            self.send_built(out, m, false).await?;
        }
        Ok(())
    }

    /// A puppet can't be in the room: its sends go through the bridge's own occupant, with the
    /// person's name before the text.
    async fn puppet_refused(
        &mut self,
        address: &BareJid,
        key: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        let Some(room) = self.rooms.get_mut(address) else {
            return Ok(());
        };
        let Some(puppet) = room.puppets.get_mut(key) else {
            return Ok(());
        };
        tracing::warn!(room = %room.id, %why, "a puppet could not join; its messages are sent by the bridge, named");
        puppet.failed = true;
        room.puppet_nicks.remove(puppet.nick());
        let waiting = std::mem::take(&mut puppet.waiting);
        for (out, mut m) in waiting {
            let name = out.event.sender.name().to_owned();
            named(&mut m, &name);
            self.send_built(out, m, false).await?;
        }
        Ok(())
    }

    /// Sends a built message for `out` and keeps `out` until the server confirms it.
    async fn send_built(
        &mut self,
        out: Outbound,
        m: Message,
        direct: bool,
    ) -> Result<(), ConnectorError> {
        let room = out.event.room.as_str().to_owned();
        let id = m.id.as_ref().map(|i| i.0.clone()).unwrap_or_default();
        self.send(m).await?;
        let key = (room, id);
        if direct {
            let ping_id = self.fresh_id("sent");
            let ping = Iq::from_get(ping_id.clone(), Ping).with_to(self.server.clone());
            self.send(ping).await?;
            self.barriers.insert(ping_id, key.clone());
        }
        self.pending.insert(
            key,
            Pending {
                outbound: out,
                deadline: Instant::now() + self.settings.send_timeout,
            },
        );
        Ok(())
    }
}

/// The condition of the error an error stanza carries.
fn error_condition(payloads: &[Element]) -> Option<DefinedCondition> {
    payloads
        .iter()
        .find_map(|e| StanzaError::try_from(e.clone()).ok())
        .map(|e| e.defined_condition)
}

/// Puts a person's name before a message's text, for a message the bridge's own occupant sends
/// for them (`<name> text`, or `/me name text` for an action).
fn named(m: &mut Message, name: &str) {
    for body in m.bodies.values_mut() {
        *body = match body.strip_prefix("/me ") {
            Some(rest) => format!("/me {name} {rest}"),
            None => format!("<{name}> {body}"),
        };
    }
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
