//! Ghosts: remote people as users in the appservice's namespace, registered, named, given
//! their avatars and joined lazily.

use super::*;

impl Sender {
    pub(super) async fn ensure_ghost(&mut self, out: &Outbound) -> Result<String, SendError> {
        let (local, id) = self
            .shared
            .names
            .ghost(out.origin.as_str(), out.event.sender.id.as_str());
        let name = out.event.sender.name().to_owned();
        let known = self.ghosts.get(&id).cloned();
        if known.is_none() {
            register(self.hs(), &local)
                .await
                .map_err(|e| errors::send_error(e.meaning()))?;
        }
        if known.flatten().as_deref() != Some(name.as_str()) {
            let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&id));
            self.hs()
                .act(
                    reqwest::Method::PUT,
                    &path,
                    &id,
                    &json!({"displayname": name}),
                )
                .await?;
        }
        self.ghosts.insert(id.clone(), Some(name));
        if let Some(avatar) = out.event.sender.avatar_url.as_deref()
            && self.avatars.get(&id).map(String::as_str) != Some(avatar)
        {
            self.sync_avatar(&id, avatar).await;
            self.avatars.insert(id.clone(), avatar.to_owned());
        }
        Ok(id)
    }

    /// Gives a ghost the remote avatar: an `mxc://` one as it is, an `http(s)` one fetched (under
    /// the same rules as attachments) and uploaded. A failure leaves the old avatar; the message
    /// still goes.
    pub(super) async fn sync_avatar(&self, ghost: &str, avatar: &str) {
        let mxc = if avatar.starts_with("mxc://") {
            avatar.to_owned()
        } else {
            let att = passerelle_sdk::Attachment {
                name: "avatar".into(),
                mime: None,
                size: None,
                url: avatar.into(),
            };
            let limit = self.shared.max_upload.min(5 * 1024 * 1024);
            let Ok(file) =
                passerelle_sdk::fetch::fetch(&att, limit, self.shared.fetch_private).await
            else {
                debug!("remote avatar not fetched");
                return;
            };
            if !file.mime.starts_with("image/") {
                return;
            }
            match self
                .hs()
                .upload(
                    "/_matrix/media/v3/upload?filename=avatar",
                    ghost,
                    &file.mime,
                    file.data,
                )
                .await
            {
                Ok(mxc) => mxc,
                Err(_) => return,
            }
        };
        let path = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(ghost));
        if let Err(e) = self
            .hs()
            .call(
                reqwest::Method::PUT,
                &path,
                Some(ghost),
                Some(&json!({"avatar_url": mxc})),
            )
            .await
        {
            debug!(status = e.status, "ghost avatar not set");
        }
    }

    pub(super) async fn ensure_joined(&mut self, ghost: &str, room: &str) -> Result<(), SendError> {
        if self.joined.contains(&(ghost.to_owned(), room.to_owned())) {
            return Ok(());
        }
        let join = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        let first = self
            .hs()
            .call(reqwest::Method::POST, &join, Some(ghost), Some(&json!({})))
            .await;
        if let Err(e) = first {
            if e.status != 403 {
                return Err(errors::send_error(e.meaning()));
            }
            // Invite-only: the bot invites its ghost, then the ghost joins.
            let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
            let bot = self.shared.names.bot.clone();
            self.hs()
                .call(
                    reqwest::Method::POST,
                    &invite,
                    Some(&bot),
                    Some(&json!({"user_id": ghost})),
                )
                .await
                .map_err(|e| errors::send_error(e.meaning()))?;
            self.hs()
                .act(reqwest::Method::POST, &join, ghost, &json!({}))
                .await?;
        }
        self.joined.insert((ghost.to_owned(), room.to_owned()));
        Ok(())
    }
}
