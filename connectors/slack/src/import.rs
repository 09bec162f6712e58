//! What the Slack connector takes over from matterbridge's `[slack.NAME]` (and
//! `[slack-legacy.NAME]`) tables.

use passerelle_sdk::import::{Channel, ImportedAccount, ImportedRoom, MatterbridgeImport, text};
use serde_json::{Map, Value};

/// matterbridge's `slack` and `slack-legacy` protocols.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["slack", "slack-legacy"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "token",
            "preservethreading",
            "iconurl",
            "webhookurl",
            "webhookbindaddress",
            "useusername",
        ]);
        match text(t, "token").filter(|t| t.starts_with("xoxb-")) {
            Some(token) => a.secret("bot_token", token),
            None => {
                a.set("bot_token", "xoxb-change-me");
                a.note(format!("[slack.{name}] has no bot token (xoxb-…): matterbridge's RTM and legacy tokens can't be used; make a Slack app and set bot_token_file"));
            }
        }
        // matterbridge's Slack bridge speaks RTM, which new apps can't: Socket Mode needs an app
        // token the old config never had.
        a.disabled = true;
        a.set("app_token", "xapp-change-me");
        a.note(format!("[slack.{name}]: passerelle uses Socket Mode. In the app's settings turn Socket Mode on, make an app-level token with connections:write, write it to a file named by app_token_file (in place of the app_token placeholder), add the chat:write.customize scope (to send as each person), then set enabled = true"));
        if text(t, "webhookurl").is_some() || text(t, "webhookbindaddress").is_some() {
            a.note(format!("[slack.{name}]: WebhookURL/WebhookBindAddress are not needed: messages are sent with chat.postMessage as each person"));
        }
        if text(t, "iconurl").is_some() {
            a.note(format!("[slack.{name}]: IconURL is not carried over; each person's own avatar is sent when their network gives one"));
        }
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let channel = c.channel.trim();
        if let Some(id) = channel.strip_prefix("ID:") {
            return match crate::config::room(id) {
                Some(crate::config::Room::Conversation(_)) => Ok(ImportedRoom {
                    room: id.to_owned(),
                    ..ImportedRoom::default()
                }),
                _ => Err(format!("{channel:?} is not a Slack conversation id")),
            };
        }
        let name = channel.trim_start_matches('#').to_lowercase();
        match crate::config::room(&format!("#{name}")) {
            Some(_) => Ok(ImportedRoom {
                room: format!("#{name}"),
                notes: vec![format!(
                    "Slack channel {channel:?} is found by name once connected (invite the bot to it); its id keeps working after a rename"
                )],
                ..ImportedRoom::default()
            }),
            None => Err(format!(
                "{channel:?} is not a Slack channel name or ID:<id>"
            )),
        }
    }
}
