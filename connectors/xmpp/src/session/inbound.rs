//! What the server sends us: room and direct messages, translated into events.

use super::*;

impl Session<'_> {
    pub(super) async fn on_message(
        &mut self,
        io: &ConnectorIo,
        m: Message,
    ) -> Result<(), ConnectorError> {
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

    pub(super) async fn on_room_message(
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

    pub(super) async fn on_direct_message(
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
    pub(super) fn translate(
        &mut self,
        room: &str,
        author: &str,
        sender: Sender,
        p: &Parsed,
    ) -> Vec<Event> {
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
}
