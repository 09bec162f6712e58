//! What the Telegram connector takes over from matterbridge's `[telegram.NAME]` tables.

use passerelle_sdk::import::{
    Channel, ImportedAccount, ImportedRoom, MatterbridgeImport, flag, text,
};
use serde_json::{Map, Value};

/// matterbridge's `telegram` protocol.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["telegram"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&["token", "useinsecureurl", "messageformat"]);
        match text(t, "token") {
            Some(token) => a.secret("token", token),
            None => {
                a.disabled = true;
                a.note(format!(
                    "[telegram.{name}] has no Token: set token_file and enable the account"
                ));
            }
        }
        a.set("mode", "polling");
        if flag(t, "useinsecureurl") == Some(true) {
            a.note(format!("[telegram.{name}] passed file links holding the bot token; passerelle offers Telegram's files through signed links of its own instead: set media_public_url to the daemon's public address"));
        }
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let room = c.channel.trim();
        match room.parse::<i64>() {
            Ok(id) if id != 0 => Ok(ImportedRoom {
                room: room.to_owned(),
                ..ImportedRoom::default()
            }),
            _ => Err(format!(
                "{room:?} is not a Telegram chat id (a number, negative for groups)"
            )),
        }
    }
}
