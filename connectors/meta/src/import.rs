//! matterbridge's WhatsApp bridges (`whatsapp`, `whatsappmulti`) log in as a phone through
//! whatsmeow, an unofficial client; the WhatsApp kind here speaks Meta's official Cloud API
//! instead. Nothing of the old login carries over: the account is written disabled, with what
//! to fill in, and a person's chat becomes their number (groups are out of the Cloud API's
//! reach).

use passerelle_sdk::import::{Channel, ImportedAccount, ImportedRoom, MatterbridgeImport};
use serde_json::{Map, Value};

/// matterbridge's WhatsApp protocols, taken over by the `whatsapp` kind.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["whatsapp", "whatsappmulti"]
    }

    fn account(&self, name: &str, _t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "number",
            "sessionfile",
            "qrondarkterminal",
            "preservethreading",
            "jid",
        ]);
        a.disabled = true;
        a.set("phone_number_id", "0");
        a.set("access_token", "change-me-whatsapp-token");
        a.set("app_secret", "change-me-meta-app-secret");
        a.set("verify_token", "change-me-verify-token");
        a.note(format!(
            "[whatsapp.{name}] logged in as a phone through whatsmeow, an unofficial client WhatsApp's terms forbid; passerelle uses the official WhatsApp Cloud API instead: register a number with Meta (developers.facebook.com, WhatsApp, API Setup), then set phone_number_id, access_token_file, app_secret_file and verify_token_file, point the webhook at /hooks/{name}, and enable the account. A Cloud API number talks to people one at a time: WhatsApp groups can't be bridged"
        ));
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let jid = c.channel.trim();
        if jid.ends_with("@g.us") || !jid.contains('@') {
            return Err(format!(
                "WhatsApp group {jid:?} can't be reached through the Cloud API (it serves one person per chat)"
            ));
        }
        let number: String = jid
            .split('@')
            .next()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if number.is_empty() {
            return Err(format!("{jid:?} is not a WhatsApp number"));
        }
        Ok(ImportedRoom {
            room: number,
            ..ImportedRoom::default()
        })
    }
}
