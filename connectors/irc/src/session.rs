//! One connection to the server: registration (IRCv3 CAP, SASL PLAIN, nick fallback), joins, the
//! read/send loop, keep-alive and the dead-link timeout. A session ends with the connection; the
//! daemon's supervisor reconnects with backoff and the next session joins again.

use crate::address::Addressing;
use crate::config::Settings;
use crate::format;
use crate::line::{self, Line};
use crate::split::split;
use crate::transport::{self, LineReader, Read, Stream};
use base64::Engine;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use passerelle_sdk::{
    ConnectionState, ConnectorError, ConnectorIo, Content, Event, EventKind, Formatted,
    MembershipChange, MessageKind, Outbound, Receipt, RoomId, SendError, Sender, Text, Timestamp,
};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

/// The IRCv3 capabilities we ask for when offered.
const WANTED_CAPS: [&str; 4] = [
    "message-tags",
    "server-time",
    "echo-message",
    "multi-prefix",
];
/// The protocol's line limit, CR LF included.
const MAX_LINE: usize = 512;
/// The text bytes one line carries at the least, with a long nick, host and channel name in
/// the prefix others see (told to the core, which counts a longer line as several).
pub const LINE_TEXT_BYTES: usize = 350;
/// How long a QUIT waits for the server to close the link.
const QUIT_WAIT: Duration = Duration::from_secs(10);
/// How often the reply memory is saved while it changes.
const ADDRESSING_SAVE_EVERY: Duration = Duration::from_secs(1);
/// Assumed host length when the server has not shown us ours.
const ASSUMED_HOST_LEN: usize = 63;

/// Whether `name` is a channel (as opposed to a nick).
pub fn is_channel(name: &str) -> bool {
    name.starts_with(['#', '&', '+', '!'])
}

/// A live connection.
pub struct Session<'s> {
    settings: &'s Settings,
    reader: LineReader<ReadHalf<Box<dyn Stream>>>,
    writer: WriteHalf<Box<dyn Stream>>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// The message being sent: its lines go out at the send rate while the session reads on
    /// (answering PINGs); the next outbound event is taken only once it is answered.
    sending: Option<Sending>,
    /// Our current nick.
    nick: String,
    /// Our `user@host` as the server shows it to others (learnt from our own JOIN).
    user_host_len: Option<usize>,
    /// Capabilities the server acknowledged.
    caps: HashSet<String>,
    /// Our rooms by lower-cased name.
    rooms: HashMap<String, RoomId>,
    /// Channels asked to join and not yet answered.
    pending_joins: HashSet<String>,
    /// Which message each remote name last sent per channel, so `name: …` answers it.
    addressing: Addressing,
    last_seen: Instant,
    ping_outstanding: bool,
}

impl<'s> Session<'s> {
    /// Connects and registers. Errors say whether a retry could help.
    pub async fn open(
        settings: &'s Settings,
        rooms: &[RoomId],
    ) -> Result<Session<'s>, ConnectorError> {
        let stream = transport::connect(settings)
            .await
            .map_err(ConnectorError::Disconnected)?;
        let (r, w) = tokio::io::split(stream);
        let limiter = (settings.send_rate > 0.0)
            .then(|| Quota::with_period(Duration::from_secs_f64(1.0 / settings.send_rate)))
            .flatten()
            .map(|q| {
                Arc::new(RateLimiter::direct(q.allow_burst(
                    NonZeroU32::new(settings.send_burst).unwrap_or(NonZeroU32::MIN),
                )))
            });
        let mut session = Session {
            settings,
            reader: LineReader::new(r),
            writer: w,
            limiter,
            sending: None,
            nick: settings.nicks.first().cloned().unwrap_or_default(),
            user_host_len: None,
            caps: HashSet::new(),
            rooms: rooms
                .iter()
                .map(|r| (r.as_str().to_lowercase(), r.clone()))
                .collect(),
            pending_joins: HashSet::new(),
            addressing: Addressing::default(),
            last_seen: Instant::now(),
            ping_outstanding: false,
        };
        tokio::time::timeout(settings.connect_timeout, session.register())
            .await
            .map_err(|_| ConnectorError::Disconnected("registration timed out".into()))??;
        Ok(session)
    }

    /// The nick the server gave us.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// The capabilities the server acknowledged.
    pub fn caps(&self) -> &HashSet<String> {
        &self.caps
    }

    async fn write_line(&mut self, text: &str) -> Result<(), ConnectorError> {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| ConnectorError::Disconnected(format!("write failed: {e}")))
    }

    async fn next_line(&mut self) -> Result<Option<Line>, ConnectorError> {
        match self.reader.next().await {
            Ok(Read::Line(raw)) => {
                self.last_seen = Instant::now();
                self.ping_outstanding = false;
                let text = line::decode(&raw);
                match Line::parse(&text) {
                    Ok(l) => Ok(Some(l)),
                    Err(e) => {
                        tracing::warn!(error = %e, bytes = raw.len(), "malformed line from the IRC server skipped");
                        Ok(None)
                    }
                }
            }
            Ok(Read::Oversized) => {
                tracing::warn!("oversized line from the IRC server skipped");
                Ok(None)
            }
            Ok(Read::Closed) => Err(ConnectorError::Disconnected(
                "the server closed the connection".into(),
            )),
            Err(e) => Err(ConnectorError::Disconnected(format!("read failed: {e}"))),
        }
    }

    async fn register(&mut self) -> Result<(), ConnectorError> {
        let s = self.settings;
        self.write_line("CAP LS 302").await?;
        if let Some(pass) = &s.password {
            self.write_line(&line::build("PASS", &[pass.expose()]))
                .await?;
        }
        let mut nick_index = 0;
        self.write_line(&line::build("NICK", &[&s.nicks[0]]))
            .await?;
        self.write_line(&line::build("USER", &[&s.username, "0", "*", &s.realname]))
            .await?;
        let mut offered: Vec<String> = Vec::new();
        loop {
            let Some(l) = self.next_line().await? else {
                continue;
            };
            match l.command.as_str() {
                "PING" => {
                    self.write_line(&line::build("PONG", &[l.param(0).unwrap_or("")]))
                        .await?
                }
                "CAP" => {
                    let sub = l.param(1).unwrap_or("").to_ascii_uppercase();
                    let more = l.params.len() > 3 && l.param(2) == Some("*");
                    let list = l.params.last().map(String::as_str).unwrap_or("");
                    match sub.as_str() {
                        "LS" => {
                            offered.extend(
                                list.split_whitespace()
                                    .map(|c| c.split('=').next().unwrap_or(c).to_owned()),
                            );
                            if more {
                                continue;
                            }
                            if s.sasl.is_some() && !offered.iter().any(|c| c == "sasl") {
                                return Err(ConnectorError::AuthRejected(
                                    "SASL is configured but the server does not offer it".into(),
                                ));
                            }
                            let mut want: Vec<&str> = WANTED_CAPS
                                .iter()
                                .copied()
                                .filter(|w| offered.iter().any(|o| o == w))
                                .collect();
                            if s.sasl.is_some() {
                                want.push("sasl");
                            }
                            if want.is_empty() {
                                self.write_line("CAP END").await?;
                            } else {
                                self.write_line(&line::build("CAP", &["REQ", &want.join(" ")]))
                                    .await?;
                            }
                        }
                        "ACK" => {
                            self.caps.extend(
                                list.split_whitespace()
                                    .map(|c| c.trim_start_matches('-').to_owned()),
                            );
                            if s.sasl.is_some() && self.caps.contains("sasl") {
                                self.write_line("AUTHENTICATE PLAIN").await?;
                            } else {
                                self.write_line("CAP END").await?;
                            }
                        }
                        "NAK" => {
                            if s.sasl.is_some() {
                                return Err(ConnectorError::AuthRejected(
                                    "the server refused the SASL capability".into(),
                                ));
                            }
                            self.write_line("CAP END").await?;
                        }
                        _ => {}
                    }
                }
                "AUTHENTICATE" if l.param(0) == Some("+") => {
                    if let Some((user, pass)) = &s.sasl {
                        let payload = format!("{user}\0{user}\0{}", pass.expose());
                        let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
                        let mut chunks = encoded.as_bytes().chunks(400).peekable();
                        let mut last_len = 0;
                        while let Some(chunk) = chunks.next() {
                            last_len = chunk.len();
                            let text = String::from_utf8_lossy(chunk).into_owned();
                            self.write_line(&format!("AUTHENTICATE {text}")).await?;
                            if chunks.peek().is_none() {
                                break;
                            }
                        }
                        if last_len == 400 {
                            self.write_line("AUTHENTICATE +").await?;
                        }
                    }
                }
                "903" => self.write_line("CAP END").await?,
                "902" | "904" | "905" | "906" | "908" => {
                    return Err(ConnectorError::AuthRejected(format!(
                        "SASL failed (numeric {})",
                        l.command
                    )));
                }
                "464" => {
                    return Err(ConnectorError::AuthRejected(
                        "server password rejected".into(),
                    ));
                }
                "465" => return Err(ConnectorError::Fatal("banned from the server".into())),
                "432" => {
                    return Err(ConnectorError::Config(
                        "the server refused the nick as invalid".into(),
                    ));
                }
                "433" | "436" | "437" => {
                    nick_index += 1;
                    let Some(next) = s.nicks.get(nick_index) else {
                        return Err(ConnectorError::Disconnected(
                            "every configured nick is in use".into(),
                        ));
                    };
                    tracing::info!(nick = %next, "nick in use; trying the next one");
                    self.write_line(&line::build("NICK", &[next])).await?;
                }
                "001" => {
                    if let Some(nick) = l.param(0) {
                        self.nick = nick.to_owned();
                    }
                    return Ok(());
                }
                "ERROR" => {
                    return Err(ConnectorError::Disconnected(
                        "the server closed the link during registration".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Joins every room (with its key), and runs until shutdown or a lost connection. The reply
    /// memory is saved at least once a second while it changes, and when the session ends.
    pub async fn run(mut self, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        self.addressing = Addressing::load(&io.state, self.rooms.keys()).await;
        let result = self.serve(io).await;
        self.addressing.save(&io.state).await;
        result
    }

    async fn serve(&mut self, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        self.reclaim_nick(io).await?;
        let rooms: Vec<RoomId> = self.rooms.values().cloned().collect();
        for room in &rooms {
            let name = room.as_str();
            if !is_channel(name) {
                tracing::warn!(room = %name, "IRC rooms must be channels (#name); not joined");
                continue;
            }
            let line = match self.settings.channel_keys.get(&name.to_lowercase()) {
                Some(key) => line::build("JOIN", &[name, key.expose()]),
                None => line::build("JOIN", &[name]),
            };
            self.write_line(&line).await?;
            self.pending_joins.insert(name.to_lowercase());
        }
        let joins_deadline = Instant::now() + self.settings.connect_timeout;
        let mut announced = false;
        if self.pending_joins.is_empty() {
            io.status.set(ConnectionState::Connected);
            announced = true;
        }
        let mut save_tick = tokio::time::interval(ADDRESSING_SAVE_EVERY);
        save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !announced && (self.pending_joins.is_empty() || Instant::now() >= joins_deadline) {
                if !self.pending_joins.is_empty() {
                    tracing::warn!(
                        missing = self.pending_joins.len(),
                        "some channels were not joined in time"
                    );
                }
                io.status.set(ConnectionState::Connected);
                announced = true;
            }
            let wake = if self.ping_outstanding {
                self.last_seen + self.settings.dead_link
            } else if !announced {
                (self.last_seen + self.settings.ping_interval).min(joins_deadline)
            } else {
                self.last_seen + self.settings.ping_interval
            };
            let limiter = self.limiter.clone();
            let sending = self.sending.is_some();
            tokio::select! {
                _ = io.shutdown.cancelled() => {
                    self.finish_sending().await;
                    self.quit().await;
                    return Ok(());
                }
                next = self.next_line() => {
                    match next {
                        Ok(Some(l)) => self.handle(l, io).await?,
                        Ok(None) => {}
                        Err(e) => {
                            self.abandon_sending();
                            return Err(e);
                        }
                    }
                }
                outbound = io.outbound.recv(), if announced && !sending => {
                    let Some(outbound) = outbound else {
                        // The daemon is gone: leave as on shutdown.
                        self.quit().await;
                        return Ok(());
                    };
                    self.start_sending(outbound);
                }
                _ = ready(limiter.as_deref()), if sending => {
                    self.send_next_line().await?;
                }
                _ = save_tick.tick(), if self.addressing.is_dirty() => {
                    self.addressing.save(&io.state).await;
                }
                rooms = io.room_updates.changed() => {
                    self.follow_rooms(&rooms).await?;
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let silent = self.last_seen.elapsed();
                    if self.ping_outstanding && silent >= self.settings.dead_link {
                        return Err(ConnectorError::Disconnected(format!(
                            "no answer from the server for {} s", silent.as_secs()
                        )));
                    }
                    if silent >= self.settings.ping_interval && !self.ping_outstanding {
                        self.write_line("PING :passerelle").await?;
                        self.ping_outstanding = true;
                    }
                }
            }
        }
    }

    /// Joins the channels a reload added and leaves the ones it removed, on this connection.
    async fn follow_rooms(&mut self, rooms: &[RoomId]) -> Result<(), ConnectorError> {
        let wanted: HashMap<String, RoomId> = rooms
            .iter()
            .filter(|r| is_channel(r.as_str()))
            .map(|r| (r.as_str().to_lowercase(), r.clone()))
            .collect();
        let gone: Vec<String> = self
            .rooms
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for lower in gone {
            if let Some(room) = self.rooms.remove(&lower) {
                self.pending_joins.remove(&lower);
                let line = line::build("PART", &[room.as_str(), "unlinked"]);
                self.write_line(&line).await?;
                tracing::info!(room = %room, "left: no longer in a link");
            }
        }
        for (lower, room) in wanted {
            if self.rooms.contains_key(&lower) {
                continue;
            }
            let line = match self.settings.channel_keys.get(&lower) {
                Some(key) => line::build("JOIN", &[room.as_str(), key.expose()]),
                None => line::build("JOIN", &[room.as_str()]),
            };
            self.write_line(&line).await?;
            self.pending_joins.insert(lower.clone());
            tracing::info!(room = %room, "joining: added to a link");
            self.rooms.insert(lower, room);
        }
        Ok(())
    }

    /// When registration had to fall back to another nick, waits (`reclaim_nick_secs` at most)
    /// for the first one to come free and takes it back, before joining anything. After a crash
    /// the holder is our previous connection: the server may still be relaying lines it had
    /// queued, and anything we said meanwhile could overtake them.
    async fn reclaim_nick(&mut self, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        let Some(wanted) = self.settings.nicks.first().cloned() else {
            return Ok(());
        };
        if self.nick.eq_ignore_ascii_case(&wanted) || self.settings.reclaim_nick.is_zero() {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings.reclaim_nick;
        tracing::info!(nick = %wanted, waited_at_most_secs = self.settings.reclaim_nick.as_secs(), "waiting for our nick to come free");
        let mut asked = false;
        while Instant::now() < deadline && !self.nick.eq_ignore_ascii_case(&wanted) {
            if !asked {
                self.write_line(&line::build("ISON", &[&wanted])).await?;
                asked = true;
            }
            let next = tokio::time::timeout_at(
                (Instant::now() + Duration::from_secs(1))
                    .min(deadline)
                    .into(),
                self.next_line(),
            )
            .await;
            let Ok(next) = next else {
                asked = false; // no answer within a second: ask again
                continue;
            };
            let Some(l) = next? else { continue };
            match l.command.as_str() {
                // RPL_ISON: the nicks of the list that are online.
                "303" => {
                    let online = l
                        .param(1)
                        .unwrap_or("")
                        .split_whitespace()
                        .any(|n| n.eq_ignore_ascii_case(&wanted));
                    if online {
                        tokio::time::sleep_until(
                            (Instant::now() + Duration::from_secs(1))
                                .min(deadline)
                                .into(),
                        )
                        .await;
                    } else {
                        self.write_line(&line::build("NICK", &[&wanted])).await?;
                    }
                    asked = false;
                }
                // Taken again in between: keep waiting.
                "433" | "436" | "437" => asked = false,
                _ => self.handle(l, io).await?,
            }
        }
        if self.nick.eq_ignore_ascii_case(&wanted) {
            tracing::info!(nick = %wanted, "took our nick back");
        } else {
            tracing::warn!(nick = %self.nick, wanted = %wanted, "our nick stayed taken; going on under another");
        }
        Ok(())
    }

    /// Says goodbye and waits (a few seconds at most) for the server to close the link. The
    /// server handles our lines in order, so once it closes, everything we sent before the QUIT
    /// has been relayed: a daemon started right after can't overtake it.
    async fn quit(&mut self) {
        if self.write_line("QUIT :passerelle stopping").await.is_err() {
            return;
        }
        let _ = self.writer.flush().await;
        let _ = tokio::time::timeout(QUIT_WAIT, async {
            loop {
                match self.reader.next().await {
                    Ok(Read::Closed) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    async fn handle(&mut self, l: Line, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        match l.command.as_str() {
            "PING" => {
                self.write_line(&line::build("PONG", &[l.param(0).unwrap_or("")]))
                    .await?
            }
            "ERROR" => {
                return Err(ConnectorError::Disconnected(
                    "the server closed the link".into(),
                ));
            }
            "PRIVMSG" | "NOTICE" => {
                if let Some(event) = self.inbound_message(&l) {
                    let room = event.room.clone();
                    // IRC cannot send a line again: waiting for the store would only slow the
                    // reader. The daemon stores what queued up in one transaction.
                    if let Err(e) = io.emitter.hand_over(event).await {
                        tracing::warn!(room = %room, error = %e, "IRC message not handed to the daemon")
                    }
                }
            }
            "JOIN" | "PART" | "KICK" => self.membership(&l, io).await,
            "TOPIC" => {
                if let (Some(nick), Some(channel), Some(topic)) = (l.nick(), l.param(0), l.param(1))
                    && let Some(room) = self.rooms.get(&channel.to_lowercase())
                    && !nick.eq_ignore_ascii_case(&self.nick)
                {
                    let event = Event::new(
                        room.clone(),
                        Sender::new(nick),
                        EventKind::Topic(Text::new(topic)),
                    );
                    let _ = io.emitter.hand_over(event).await;
                }
            }
            "NICK" => {
                if let (Some(old), Some(new)) = (l.nick(), l.param(0))
                    && old.eq_ignore_ascii_case(&self.nick)
                {
                    self.nick = new.to_owned();
                }
            }
            "403" | "405" | "471" | "473" | "474" | "475" | "476" | "477" => {
                if let Some(channel) = l.param(1) {
                    let lower = channel.to_lowercase();
                    if self.pending_joins.remove(&lower) {
                        tracing::warn!(channel = %channel, numeric = %l.command, "could not join the channel");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn membership(&mut self, l: &Line, io: &mut ConnectorIo) {
        let Some(prefix) = &l.prefix else { return };
        let (who, channel, change) = match l.command.as_str() {
            "JOIN" => (prefix.nick.as_str(), l.param(0), MembershipChange::Join),
            "PART" => (prefix.nick.as_str(), l.param(0), MembershipChange::Leave),
            _ => (l.param(1).unwrap_or(""), l.param(0), MembershipChange::Kick),
        };
        let Some(channel) = channel else { return };
        let lower = channel.to_lowercase();
        if who.eq_ignore_ascii_case(&self.nick) {
            if change == MembershipChange::Join {
                self.pending_joins.remove(&lower);
                if let (Some(user), Some(host)) = (&prefix.user, &prefix.host) {
                    self.user_host_len = Some(user.len() + host.len());
                }
            } else if change == MembershipChange::Kick && self.rooms.contains_key(&lower) {
                tracing::warn!(channel = %channel, "kicked from the channel; joining again");
                let _ = self.write_line(&line::build("JOIN", &[channel])).await;
            }
            return;
        }
        if let Some(room) = self.rooms.get(&lower) {
            let event = Event::new(
                room.clone(),
                Sender::new(who),
                EventKind::Membership(change),
            );
            let _ = io.emitter.hand_over(event).await;
        }
    }

    /// Turns a PRIVMSG or NOTICE into an event, or `None` for what is not bridged: our own echo,
    /// server notices, private messages, CTCP other than ACTION, malformed lines.
    fn inbound_message(&self, l: &Line) -> Option<Event> {
        let prefix = l.prefix.as_ref().filter(|p| p.is_user())?;
        if prefix.nick.eq_ignore_ascii_case(&self.nick) {
            return None;
        }
        let (Some(target), Some(text)) = (l.param(0), l.param(1)) else {
            tracing::warn!(command = %l.command, "message without target or text skipped");
            return None;
        };
        if !is_channel(target) {
            // Private messages are never bridged: no link can name them, and none should.
            tracing::debug!("private IRC message not bridged");
            return None;
        }
        let room = self
            .rooms
            .get(&target.to_lowercase())
            .cloned()
            .unwrap_or_else(|| RoomId::new(target));
        let (kind, body) = match format::ctcp(text) {
            Some(("ACTION", args)) => (MessageKind::Emote, args),
            Some(_) => return None,
            None if l.command == "NOTICE" => (MessageKind::Notice, text),
            None => (MessageKind::Normal, text),
        };
        let lower = target.to_lowercase();
        let (reply_to, body) = match self.addressing.resolve(&lower, body) {
            Some((id, rest)) if kind == MessageKind::Normal => (Some(id), rest),
            _ => (None, body),
        };
        let converted = format::convert(body);
        let content = Content {
            text: Text::new(converted.plain),
            formatted: converted.html.map(|h| Formatted::Html(Text::new(h))),
            kind,
            attachments: Vec::new(),
        };
        let mut sender = Sender::new(prefix.nick.as_str());
        sender.display_name = Some(prefix.nick.clone());
        let mut event = Event::new(room, sender, EventKind::Message(content));
        event.reply_to = reply_to;
        if let Some(id) = l.tag("msgid") {
            event.remote_id = Some(id.into());
        }
        // server-time, when the server tags it; else the time we read it (set by Event::new).
        if let Some(at) = l
            .tag("time")
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            && let Ok(since) = at.duration_since(UNIX_EPOCH)
        {
            event.at = Timestamp(since.as_millis() as u64);
        }
        Some(event)
    }

    /// How many bytes of text fit in one `command target :text` line as others will see it.
    fn budget(&self, command: &str, target: &str, emote: bool) -> usize {
        let source = 1
            + self.nick.len()
            + 2
            + self
                .user_host_len
                .unwrap_or(self.settings.username.len() + 1 + ASSUMED_HOST_LEN)
            + 1;
        let fixed = 2 + source + command.len() + 1 + target.len() + 2 + if emote { 9 } else { 0 };
        MAX_LINE.saturating_sub(fixed).max(16)
    }

    /// Turns an outbound event into the lines to send, or answers it at once when it can't be
    /// sent here.
    fn start_sending(&mut self, outbound: Outbound) {
        match self.lines_of(&outbound.event) {
            Ok(lines) => {
                self.sending = Some(Sending {
                    outbound,
                    lines: lines.into(),
                })
            }
            Err(e) => outbound.respond(Err(e)),
        }
    }

    fn lines_of(&self, event: &Event) -> Result<Vec<String>, SendError> {
        let EventKind::Message(content) = &event.kind else {
            return Err(SendError::Unsupported("IRC carries messages only"));
        };
        let target = event.room.as_str();
        if !is_channel(target) || !self.rooms.contains_key(&target.to_lowercase()) {
            return Err(SendError::RoomNotFound);
        }
        let command = if content.kind == MessageKind::Notice {
            "NOTICE"
        } else {
            "PRIVMSG"
        };
        let emote = content.kind == MessageKind::Emote;
        let budget = self.budget(command, target, emote);
        let mut lines = Vec::new();
        for text_line in content.text.as_str().split('\n') {
            let text_line = text_line.trim_end_matches('\r');
            if text_line.is_empty() {
                continue;
            }
            for piece in split(text_line, budget) {
                let payload = if emote {
                    format!("\x01ACTION {piece}\x01")
                } else {
                    piece.to_owned()
                };
                lines.push(line::build_message(command, target, &payload));
            }
        }
        Ok(lines)
    }

    /// Writes the next line of the message being sent (the send rate allowed it); once the
    /// last is out, answers the message.
    async fn send_next_line(&mut self) -> Result<(), ConnectorError> {
        let Some(next) = self.sending.as_mut().and_then(|s| s.lines.pop_front()) else {
            self.sent();
            return Ok(());
        };
        if let Err(e) = self.write_line(&next).await {
            self.abandon_sending();
            return Err(e);
        }
        if self.sending.as_ref().is_some_and(|s| s.lines.is_empty()) {
            self.sent();
        }
        Ok(())
    }

    /// Answers the message whose lines are all out.
    fn sent(&mut self) {
        let Some(Sending { outbound, .. }) = self.sending.take() else {
            return;
        };
        let event = &outbound.event;
        // IRC gives no ids: this one lets `name: …` answers (see `address`) and the message map
        // find the message.
        let id: passerelle_sdk::RemoteMessageId = format!("irc-out.{}", event.key).into();
        // Only said messages are answered by name; actions and notices (which also carry the
        // core's words about reactions and deletions) are not.
        if matches!(&event.kind, EventKind::Message(c) if c.kind == MessageKind::Normal) {
            let channel = event.room.as_str().to_lowercase();
            self.addressing
                .record(&channel, event.sender.name(), id.as_str());
        }
        outbound.respond(Ok(Receipt {
            remote_id: Some(id),
        }));
    }

    /// The connection is gone with lines still to send: the daemon sends the message again.
    fn abandon_sending(&mut self) {
        if let Some(Sending { outbound, .. }) = self.sending.take() {
            outbound.respond(Err(SendError::Disconnected));
        }
    }

    /// On shutdown: the rest of the message goes out at once (a few lines at most, `max_lines`),
    /// so what the daemon handed over is answered as sent.
    async fn finish_sending(&mut self) {
        while self.sending.is_some() {
            if self.send_next_line().await.is_err() {
                return;
            }
        }
    }
}

/// A message being sent, line by line.
struct Sending {
    outbound: Outbound,
    lines: std::collections::VecDeque<String>,
}

/// Waits until `limiter` allows a line (at once without one).
async fn ready(limiter: Option<&DefaultDirectRateLimiter>) {
    if let Some(limiter) = limiter {
        limiter.until_ready().await;
    }
}
