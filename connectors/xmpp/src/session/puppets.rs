//! Component mode: other networks' people as puppets, each with its own JID and nick in a room.

use super::*;

/// Component mode: one person from another network in one room, under their own JID and name.
pub(super) struct Puppet {
    pub(super) jid: FullJid,
    /// Their name, and the nicks tried in turn when it is taken.
    pub(super) nicks: Vec<String>,
    pub(super) nick_index: usize,
    pub(super) joined: bool,
    /// The room refused them: their messages go through the bridge's own occupant, named.
    pub(super) failed: bool,
    /// Sends waiting for the join.
    pub(super) waiting: Vec<(Outbound, Message)>,
}

impl Puppet {
    pub(super) fn nick(&self) -> &str {
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

impl Session<'_> {
    /// Sends a built message: in component mode, from the sender's puppet (which first joins the
    /// room under their name; the send waits for that), else from the bridge's account.
    pub(super) async fn dispatch(
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
    pub(super) async fn join_puppet(
        &mut self,
        address: &BareJid,
        key: &str,
    ) -> Result<(), ConnectorError> {
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
    pub(super) async fn on_puppet_presence(
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
    pub(super) async fn puppet_refused(
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
}
