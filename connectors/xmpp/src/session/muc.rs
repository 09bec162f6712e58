//! Rooms: joining (nick fallback, passwords, history only for catch-up), the subject that closes a
//! join, and occupants' presence.

use super::*;

impl Room {
    /// Joined, and the join's history is through (the subject closes it; a server that sends
    /// none gets a few seconds), so that our own earlier messages in it are known before we send.
    pub(super) fn ready(&self) -> bool {
        self.joined
            && (self.subject_seen
                || self
                    .joined_at
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(5)))
    }
}

impl Session<'_> {
    pub(super) async fn join(&mut self, address: &BareJid) -> Result<(), ConnectorError> {
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

    pub(super) async fn next_nick(&mut self, address: &BareJid) -> Result<(), ConnectorError> {
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

    pub(super) fn all_joins_settled(&self) -> bool {
        self.rooms.values().all(|r| r.ready() || r.failed.is_some())
    }

    pub(super) async fn on_subject(
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

    pub(super) async fn on_presence(
        &mut self,
        io: &ConnectorIo,
        p: Presence,
    ) -> Result<(), ConnectorError> {
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
}
