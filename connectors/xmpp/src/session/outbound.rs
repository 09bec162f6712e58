//! What the daemon sends: an outbound message built into a stanza, and where it goes.

use super::*;

impl Session<'_> {
    /// Where a send to `room` goes, or why it can't go now.
    pub(super) fn target(&self, room: &str) -> Result<(Jid, MessageType), SendError> {
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

    pub(super) async fn on_outbound(&mut self, out: Outbound) -> Result<(), ConnectorError> {
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

    /// Sends a built message for `out` and keeps `out` until the server confirms it.
    pub(super) async fn send_built(
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
