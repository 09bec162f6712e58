//! Portal rooms: a homeserver alias query opens an invite-only room linked to a room another
//! account serves; a knock from an allowed server is answered with an invite.

use super::*;

impl Shared {
    /// `user` knocked on `room_id`: when it is a portal the bot made and the user is on a server
    /// it trusts, the bot invites them; otherwise the knock waits (logged, without the id).
    pub(super) async fn knocked(&self, room_id: &str, user: &str) {
        let portal = matches!(self.state.get(&portal_room_key(room_id)).await, Ok(Some(_)));
        if !portal {
            return;
        }
        let server = user.split_once(':').map(|(_, s)| s).unwrap_or_default();
        if !self.portal_servers.iter().any(|s| s == server) {
            info!(
                room = room_id,
                "a knock from a server not in portal_servers; not let in"
            );
            return;
        }
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id));
        match self.as_bot(&path, json!({"user_id": user})).await {
            Ok(_) => info!(
                room = room_id,
                "a knock on a portal answered with an invite"
            ),
            Err(e) => warn!(
                room = room_id,
                status = e.status,
                "could not invite after a knock"
            ),
        }
    }

    /// `GET /_matrix/app/v1/rooms/{alias}`: a Matrix user asked for
    /// `#<alias_prefix>_<account>_<room>:<server>`. When that account may be opened this way and
    /// serves that room, the bot makes an invite-only room (join rule `knock`) with the alias and
    /// the daemon links it; the user then knocks and is invited (see [`Self::knocked`]).
    pub(super) async fn alias_query(&self, alias: &str) -> Response {
        let not_found = || matrix_error(404, "M_NOT_FOUND", "no such portal");
        let Some((account, room)) =
            ghost::parse_alias(alias, &self.alias_prefix, &self.names.server)
        else {
            return not_found();
        };
        if !self.portal_accounts.contains(&account) {
            debug!("alias for an account that can't be opened from Matrix");
            return not_found();
        }
        let _one_at_a_time = self.portal_lock.lock().await;
        let local = alias
            .trim_start_matches('#')
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        // Invite-only: whoever resolves the alias may knock, and the bot invites the users of
        // the servers it trusts (`portal_servers`); no guest, no room directory entry.
        let body = json!({
            "room_alias_name": local,
            "name": room,
            "topic": format!("Bridged with {room} ({account}) by passerelle"),
            "preset": "private_chat",
            "visibility": "private",
            "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}},
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
            ],
        });
        let created = self
            .hs
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&self.names.bot),
                Some(&body),
            )
            .await;
        let room_id = match created {
            Ok(v) => match v["room_id"].as_str() {
                Some(id) => id.to_owned(),
                None => return matrix_error(500, "M_UNKNOWN", "no room"),
            },
            Err(e) => {
                warn!(status = e.status, "could not create a portal room");
                return matrix_error(500, "M_UNKNOWN", "could not create the room");
            }
        };
        let request = passerelle_sdk::PortalRequest {
            name: format!("portal {alias}"),
            room: RoomId::new(room_id.as_str()),
            remote: (account.as_str().into(), RoomId::new(room.as_str())),
        };
        if let Err(why) = self.portal_links.open(request).await {
            warn!(reason = %why, "the daemon refused a portal");
            let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id));
            let _ = self
                .hs
                .call(
                    reqwest::Method::POST,
                    &leave,
                    Some(&self.names.bot),
                    Some(&json!({})),
                )
                .await;
            return not_found();
        }
        if let Err(e) = self
            .state
            .put(&portal_room_key(&room_id), alias.as_bytes().to_vec())
            .await
        {
            warn!(error = %e, "could not remember the portal room; knocks will not be answered");
        }
        self.rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room_id.clone(), RoomId::new(room_id.as_str()));
        self.ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(RoomId::new(room_id.as_str()), room_id.clone());
        info!(room = %room_id, "portal room opened");
        json_response(200, &json!({}))
    }
}
