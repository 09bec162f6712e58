//! What one bot knows of its guilds: which channel is which room, threads and their parents,
//! forum channels, direct-message channels, the webhooks it sends through, channel names for
//! mentions, and the last message seen in each room (for the catch-up after a gap).
//!
//! Filled from the Gateway (`READY`, `GUILD_CREATE`, `CHANNEL_*`, `THREAD_*`) and from REST
//! answers; every map is bounded, since a guild may hold thousands of threads.

use crate::config::{Guild, Room, room};
use passerelle_sdk::RoomId;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The most threads, names and direct-message channels remembered (the oldest are forgotten
/// first only in the sense that the map is cleared and relearned; nothing is lost but a lookup).
const MAX_ENTRIES: usize = 50_000;

/// A webhook the bot sends through: its id and token (a secret: it lets anyone post).
#[derive(Clone)]
pub struct Hook {
    /// The webhook's id.
    pub id: u64,
    /// Its token.
    pub token: passerelle_sdk::Secret,
}

/// Where a Discord channel's messages go on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The room.
    pub room: RoomId,
    /// The room's own channel (the parent, for a thread).
    pub channel: u64,
    /// For a thread: the remote id of its root (`parent/thread` for a thread started from a
    /// message, `thread/thread` for a forum post, whose first message has the thread's id).
    pub thread_root: Option<String>,
}

#[derive(Default)]
struct Inner {
    me: u64,
    application: u64,
    threads: HashMap<u64, u64>,
    forums: HashSet<u64>,
    guild_of: HashMap<u64, u64>,
    names: HashMap<u64, String>,
    dm_channel_user: HashMap<u64, u64>,
    user_dm_channel: HashMap<u64, u64>,
    hooks: HashMap<u64, Hook>,
    no_hooks: HashSet<u64>,
    ours: HashSet<u64>,
    looked_up: HashSet<u64>,
    seen: HashMap<u64, u64>,
    dirty: HashSet<u64>,
    guild_names: HashMap<u64, String>,
    /// Named rooms found: channel id to room, and name to channel id.
    bound: HashMap<u64, RoomId>,
    bound_names: HashMap<String, u64>,
    ambiguous: HashSet<String>,
}

/// The bot's view (shared by the Gateway task and the sender).
pub struct Directory {
    channels: HashMap<u64, RoomId>,
    people: HashMap<u64, RoomId>,
    named: HashMap<String, RoomId>,
    guild: Guild,
    inner: Mutex<Inner>,
}

fn bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
}

impl Directory {
    /// A directory for the rooms an account serves (rooms that are not Discord rooms are
    /// ignored: `check_room` refused them before).
    pub fn new(rooms: &[RoomId]) -> Self {
        Self::with_guild(rooms, Guild::Any)
    }

    /// A directory whose `#name` rooms are looked for in `guild`.
    pub fn with_guild(rooms: &[RoomId], guild: Guild) -> Self {
        let mut channels = HashMap::new();
        let mut people = HashMap::new();
        let mut named = HashMap::new();
        for r in rooms {
            match room(r.as_str()) {
                Some(Room::Channel(c)) => {
                    channels.insert(c, r.clone());
                }
                Some(Room::Direct(u)) => {
                    people.insert(u, r.clone());
                }
                Some(Room::Named(n)) => {
                    named.insert(n, r.clone());
                }
                None => {}
            }
        }
        Self {
            channels,
            people,
            named,
            guild,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room channels.
    pub fn room_channels(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.channels.keys().copied().collect();
        v.extend(self.lock().bound.keys().copied());
        v.sort_unstable();
        v
    }

    /// The people whose direct messages are rooms.
    pub fn room_people(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.people.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Sets the bot's user id and its application's id (from `READY`).
    pub fn set_me(&self, user: u64, application: u64) {
        let mut i = self.lock();
        i.me = user;
        i.application = application;
    }

    /// The bot's user id (0 before `READY`).
    pub fn me(&self) -> u64 {
        self.lock().me
    }

    /// The bot's application id.
    pub fn application(&self) -> u64 {
        self.lock().application
    }

    /// Learns a channel object (from the Gateway or REST): its guild, name, type, and for a
    /// thread its parent.
    pub fn learn_channel(&self, channel: &serde_json::Value) {
        let Some(id) = crate::rest::snowflake(channel, "id") else {
            return;
        };
        let kind = channel.get("type").and_then(serde_json::Value::as_u64);
        let mut i = self.lock();
        i.looked_up.insert(id);
        if let Some(guild) = crate::rest::snowflake(channel, "guild_id") {
            bounded(&mut i.guild_of);
            i.guild_of.insert(id, guild);
        }
        if let Some(name) = channel.get("name").and_then(serde_json::Value::as_str) {
            bounded(&mut i.names);
            i.names.insert(id, name.chars().take(100).collect());
        }
        self.bind(&mut i, id, kind, channel);
        match kind {
            // GUILD_FORUM, GUILD_MEDIA: each post is a thread.
            Some(15) | Some(16) => {
                i.forums.insert(id);
            }
            // Announcement, public and private threads.
            Some(10) | Some(11) | Some(12) => {
                if let Some(parent) = crate::rest::snowflake(channel, "parent_id") {
                    bounded(&mut i.threads);
                    i.threads.insert(id, parent);
                }
            }
            // A direct message: its one recipient.
            Some(1) => {
                if let Some(user) = channel
                    .get("recipients")
                    .and_then(serde_json::Value::as_array)
                    .and_then(|r| r.first())
                    .and_then(|u| crate::rest::snowflake(u, "id"))
                {
                    bounded(&mut i.dm_channel_user);
                    bounded(&mut i.user_dm_channel);
                    i.dm_channel_user.insert(id, user);
                    i.user_dm_channel.insert(user, id);
                }
            }
            _ => {}
        }
    }

    /// Binds a channel to the `#name` room it is, if it is one: a text, announcement or forum
    /// channel of that name in the configured guild. A name found in two channels is bound to
    /// neither (a message must not go to the wrong one), and said in the log.
    fn bind(&self, i: &mut Inner, id: u64, kind: Option<u64>, channel: &serde_json::Value) {
        if self.named.is_empty() || !matches!(kind, Some(0) | Some(5) | Some(15) | Some(16)) {
            return;
        }
        let Some(name) = channel.get("name").and_then(serde_json::Value::as_str) else {
            return;
        };
        let name = name.to_lowercase();
        let Some(room) = self.named.get(&name) else {
            return;
        };
        let guild =
            crate::rest::snowflake(channel, "guild_id").or_else(|| i.guild_of.get(&id).copied());
        let in_guild = match (&self.guild, guild) {
            (Guild::Any, _) => true,
            (Guild::Id(want), Some(g)) => *want == g,
            (Guild::Name(want), Some(g)) => i
                .guild_names
                .get(&g)
                .is_some_and(|n| n.eq_ignore_ascii_case(want)),
            _ => false,
        };
        if !in_guild || i.ambiguous.contains(&name) {
            return;
        }
        match i.bound_names.get(&name).copied() {
            Some(other) if other != id => {
                tracing::warn!(channel = %name, "two channels have this room's name; give the channel's id (or set guild) instead");
                i.bound.remove(&other);
                i.bound_names.remove(&name);
                i.ambiguous.insert(name);
            }
            _ => {
                i.bound.insert(id, room.clone());
                i.bound_names.insert(name, id);
            }
        }
    }

    /// Learns a guild's name (from `GUILD_CREATE`), for `guild = "name"`.
    pub fn learn_guild_name(&self, guild: u64, name: &str) {
        let mut i = self.lock();
        bounded(&mut i.guild_names);
        i.guild_names
            .insert(guild, name.chars().take(100).collect());
    }

    /// The channel a `#name` room was found to be.
    pub fn named_channel(&self, name: &str) -> Option<u64> {
        self.lock().bound_names.get(name).copied()
    }

    /// The room a channel is (by id or by name).
    fn room_of(&self, i: &Inner, channel: u64) -> Option<RoomId> {
        self.channels
            .get(&channel)
            .or_else(|| i.bound.get(&channel))
            .cloned()
    }

    /// Learns the guild of a channel from an event that names both.
    pub fn learn_guild(&self, channel: u64, guild: u64) {
        let mut i = self.lock();
        bounded(&mut i.guild_of);
        i.guild_of.insert(channel, guild);
    }

    /// Whether `channel` was looked up already (so an unknown one is asked for once).
    pub fn looked_up(&self, channel: u64) -> bool {
        self.lock().looked_up.contains(&channel)
    }

    /// Marks `channel` as looked up, even if the lookup failed.
    pub fn mark_looked_up(&self, channel: u64) {
        let mut i = self.lock();
        if i.looked_up.len() >= MAX_ENTRIES {
            i.looked_up.clear();
        }
        i.looked_up.insert(channel);
    }

    /// Where messages of `channel` go, if anywhere.
    pub fn place(&self, channel: u64) -> Option<Place> {
        let i = self.lock();
        if let Some(room) = self.room_of(&i, channel) {
            return Some(Place {
                room,
                channel,
                thread_root: None,
            });
        }
        if let Some(parent) = i.threads.get(&channel)
            && let Some(room) = self.room_of(&i, *parent)
        {
            let root = if i.forums.contains(parent) {
                format!("{channel}/{channel}")
            } else {
                format!("{parent}/{channel}")
            };
            return Some(Place {
                room,
                channel: *parent,
                thread_root: Some(root),
            });
        }
        let user = i.dm_channel_user.get(&channel)?;
        self.people.get(user).map(|room| Place {
            room: room.clone(),
            channel,
            thread_root: None,
        })
    }

    /// The parent of a thread, if `channel` is a known one.
    pub fn parent_of(&self, channel: u64) -> Option<u64> {
        self.lock().threads.get(&channel).copied()
    }

    /// Records that `thread` (a new one) belongs to `parent`.
    pub fn add_thread(&self, thread: u64, parent: u64) {
        let mut i = self.lock();
        bounded(&mut i.threads);
        i.threads.insert(thread, parent);
    }

    /// Whether `channel` is a forum (its posts are threads).
    pub fn is_forum(&self, channel: u64) -> bool {
        self.lock().forums.contains(&channel)
    }

    /// The guild of a channel, when known.
    pub fn guild_of(&self, channel: u64) -> Option<u64> {
        self.lock().guild_of.get(&channel).copied()
    }

    /// A channel's name, when known.
    pub fn name_of(&self, channel: u64) -> Option<String> {
        self.lock().names.get(&channel).cloned()
    }

    /// The direct-message channel with `user`, when known.
    pub fn dm_channel(&self, user: u64) -> Option<u64> {
        self.lock().user_dm_channel.get(&user).copied()
    }

    /// The webhook the bot sends through in `channel`.
    pub fn hook(&self, channel: u64) -> Option<Hook> {
        self.lock().hooks.get(&channel).cloned()
    }

    /// Whether `channel` was found to allow no webhook (the bot sends there itself).
    pub fn hookless(&self, channel: u64) -> bool {
        self.lock().no_hooks.contains(&channel)
    }

    /// Records the webhook of `channel`, or that it has none for us.
    pub fn set_hook(&self, channel: u64, hook: Option<Hook>) {
        let mut i = self.lock();
        match hook {
            Some(h) => {
                i.ours.insert(h.id);
                i.hooks.insert(channel, h);
                i.no_hooks.remove(&channel);
            }
            None => {
                i.no_hooks.insert(channel);
            }
        }
    }

    /// Forgets the webhook of `channel` (deleted by someone): the next send finds or makes one.
    pub fn forget_hook(&self, channel: u64) {
        self.lock().hooks.remove(&channel);
    }

    /// Records a webhook of ours (owned by this bot) without sending through it.
    pub fn add_ours(&self, webhook: u64) {
        self.lock().ours.insert(webhook);
    }

    /// Whether a message from `webhook` (with its `application_id`) was sent by this bridge.
    pub fn is_ours(&self, webhook: u64, application: Option<u64>) -> bool {
        let i = self.lock();
        i.ours.contains(&webhook) || (i.application != 0 && application == Some(i.application))
    }

    /// The last message seen in a room's channel.
    pub fn seen(&self, channel: u64) -> Option<u64> {
        self.lock().seen.get(&channel).copied()
    }

    /// Loads a saved last-seen id (at start).
    pub fn load_seen(&self, channel: u64, message: u64) {
        self.lock().seen.insert(channel, message);
    }

    /// Records a message seen (stored by the daemon) in a room's channel.
    pub fn saw(&self, channel: u64, message: u64) {
        let mut i = self.lock();
        let newer = i.seen.get(&channel).is_none_or(|m| *m < message);
        if newer {
            i.seen.insert(channel, message);
            i.dirty.insert(channel);
        }
    }

    /// The last-seen ids changed since the last call.
    pub fn take_dirty(&self) -> Vec<(u64, u64)> {
        let mut i = self.lock();
        let dirty: Vec<u64> = i.dirty.drain().collect();
        dirty
            .into_iter()
            .filter_map(|c| i.seen.get(&c).map(|m| (c, *m)))
            .collect()
    }
}
