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
        let body = ev["content"]["body"].as_str();
        let answer = admin::command(
            &self.state,
            &self.view,
            room_id,
            &members,
            &self.names.bot,
            admin,
            body,
        )
        .await;
        if let Some(text) = answer {
            admin::Notices::notice(self, room_id, &text).await;
        }
    }

    /// Tells every admin `text` in their management room.
    pub(super) async fn notify_admins(&self, text: &str) {
        admin::notify(self, &self.state, &self.admins, text).await;
    }
}

/// The appservice's way to the admins: its bot user, through the homeserver's API.
impl admin::Notices for Shared {
    async fn usable(&self, _room: &str) -> bool {
        true
    }

    async fn open_direct(&self, admin: &str) -> Option<String> {
        let body = json!({"invite": [admin], "is_direct": true, "preset": "trusted_private_chat"});
        let created = self
            .hs
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&self.names.bot),
                Some(&body),
            )
            .await;
        match created {
            Ok(v) => v["room_id"].as_str().map(str::to_owned),
            Err(e) => {
                warn!(
                    status = e.status,
                    "could not open a direct chat with an admin"
                );
                None
            }
        }
    }

    /// Says `text` as the bot in `room` (an `m.notice`).
    async fn notice(&self, room: &str, text: &str) {
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
}
