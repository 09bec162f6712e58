//! What the Discord connector takes over from matterbridge's `[discord.NAME]` tables.

use passerelle_sdk::import::{
    Channel, ImportedAccount, ImportedRoom, MatterbridgeImport, flag, text,
};
use serde_json::{Map, Value};

/// matterbridge's `discord` protocol.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["discord"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "token",
            "server",
            "autowebhooks",
            "webhookurl",
            "allowmention",
        ]);
        match text(t, "token") {
            Some(token) => a.secret("token", token.strip_prefix("Bot ").unwrap_or(token)),
            None => {
                a.disabled = true;
                a.note(format!(
                    "[discord.{name}] has no Token: set token_file and enable the account"
                ));
            }
        }
        if let Some(server) = text(t, "server") {
            a.set("guild", server.strip_prefix("ID:").unwrap_or(server));
        }
        a.set("webhooks", true);
        if flag(t, "autowebhooks") != Some(true) {
            a.note(format!("[discord.{name}]: passerelle sends as each person through one webhook per channel that it makes itself (as AutoWebhooks did); give the bot Manage Webhooks, or set webhooks = false"));
        }
        if t.get("allowmention").is_some() {
            a.note(format!("[discord.{name}]: bridged messages never ping anyone (AllowMention is not carried over)"));
        }
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let channel = c.channel.trim();
        let id = channel.strip_prefix("ID:").unwrap_or(channel);
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            let mut r = ImportedRoom {
                room: id.to_owned(),
                ..ImportedRoom::default()
            };
            if text(c.options, "webhookurl").is_some() {
                r.notes.push(format!("the WebhookURL of Discord channel {id} is not needed: passerelle makes its own webhook"));
            }
            return Ok(r);
        }
        // A name (matterbridge's "category/channel" form keeps the channel's own name).
        let name = channel
            .rsplit('/')
            .next()
            .unwrap_or(channel)
            .trim_start_matches('#');
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "{channel:?} is not a Discord channel name or ID:<id>"
            ));
        }
        Ok(ImportedRoom {
            room: format!("#{name}"),
            notes: vec![format!(
                "Discord channel {channel:?} is found by name once the bot is connected; an id (Developer Mode, right-click the channel, Copy Channel ID) keeps working after a rename"
            )],
            ..ImportedRoom::default()
        })
    }
}
