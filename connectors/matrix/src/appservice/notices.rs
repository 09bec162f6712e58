//! The admins' management rooms: commands answered in a direct chat with the bot, and notices.

use super::*;

impl Shared {
    pub(super) async fn admin_command(&self, room_id: &str, admin: &str, ev: &Value) {
        // Only in a direct chat: the bot and this admin, nobody else (the answers name rooms,
        // accounts and people's numbers).
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room_id));
        let members = self
            .hs
            .call(reqwest::Method::GET, &path, Some(&self.names.bot), None)
            .await
            .ok()
            .and_then(|v| {
                v["joined"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>())
            })
            .unwrap_or_default();
        if !admin::is_direct_chat(&members, &self.names.bot, admin) {
            debug!(
                room = room_id,
                "an admin's message outside a direct chat with the bot; not answered"
            );
            return;
        }
        let _ = self
            .state
            .put(&admin_room_key(admin), room_id.as_bytes().to_vec())
            .await;
        let Some(text) = ev["content"]["body"]
            .as_str()
            .and_then(|b| admin::answer(b, &self.view))
        else {
            return;
        };
        self.notice(room_id, &text).await;
    }

    /// Says `text` as the bot in `room` (an `m.notice`).
    pub(super) async fn notice(&self, room: &str, text: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(room),
            enc(&format!("pss.notice.{}", uuid::Uuid::now_v7()))
        );
        let body = json!({"msgtype": "m.notice", "body": text});
        if let Err(e) = self
            .hs
            .call(
                reqwest::Method::PUT,
                &path,
                Some(&self.names.bot),
                Some(&body),
            )
            .await
        {
            warn!(status = e.status, "could not send a notice to an admin");
        }
    }

    /// Tells every admin `text` in their management room (a direct chat is opened when none is
    /// known).
    pub(super) async fn notify_admins(&self, text: &str) {
        for admin in &self.admins {
            let known = self
                .state
                .get(&admin_room_key(admin))
                .await
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok());
            let room = match known {
                Some(r) => r,
                None => {
                    let body = json!({"invite": [admin], "is_direct": true,
                        "preset": "trusted_private_chat"});
                    match self
                        .hs
                        .call(
                            reqwest::Method::POST,
                            "/_matrix/client/v3/createRoom",
                            Some(&self.names.bot),
                            Some(&body),
                        )
                        .await
                    {
                        Ok(v) => {
                            let Some(id) = v["room_id"].as_str() else {
                                continue;
                            };
                            let _ = self
                                .state
                                .put(&admin_room_key(admin), id.as_bytes().to_vec())
                                .await;
                            id.to_owned()
                        }
                        Err(e) => {
                            warn!(
                                status = e.status,
                                "could not open a direct chat with an admin"
                            );
                            continue;
                        }
                    }
                }
            };
            self.notice(&room, text).await;
        }
    }
}
