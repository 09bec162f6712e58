//! What the Mattermost connector takes over from matterbridge's `[mattermost.NAME]` tables.

use passerelle_sdk::import::{
    Channel, ImportedAccount, ImportedRoom, MatterbridgeImport, flag, text,
};
use serde_json::{Map, Value};

/// matterbridge's `mattermost` protocol.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["mattermost"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "server",
            "team",
            "token",
            "login",
            "password",
            "nossl",
            "skiptlsverify",
            "useusername",
            "webhookurl",
            "webhookbindaddress",
        ]);
        let scheme = if flag(t, "notls") == Some(true) {
            "http"
        } else {
            "https"
        };
        match text(t, "server") {
            Some(server) => {
                let host = server
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                a.set("url", format!("{scheme}://{host}"));
            }
            None => {
                a.set("url", "https://chat.example.org");
                a.disabled = true;
                a.note(format!(
                    "[mattermost.{name}] has no Server: set url and enable the account"
                ));
            }
        }
        if let Some(team) = text(t, "team") {
            a.set("team", team);
        }
        match text(t, "token") {
            Some(token) => a.secret("token", token),
            None => {
                a.set("token", "changemechangemechangeme");
                a.disabled = true;
                a.note(format!("[mattermost.{name}] logged in with Login and Password; passerelle takes a bot account's token or a personal access token: make one, write it to a file named by token_file (in place of the token placeholder), and enable the account"));
            }
        }
        if flag(t, "skiptlsverify") == Some(true) {
            a.note(format!("[mattermost.{name}]: SkipTLSVerify is not carried over; certificates are always verified"));
        }
        if text(t, "webhookurl").is_some() || text(t, "webhookbindaddress").is_some() {
            a.note(format!("[mattermost.{name}]: webhooks are not needed: posts are made through the API, as each person where the server allows overriding names"));
        }
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let channel = c.channel.trim();
        if let Some(id) = channel.strip_prefix("ID:") {
            return crate::config::valid_id(id)
                .then(|| ImportedRoom {
                    room: id.to_owned(),
                    ..ImportedRoom::default()
                })
                .ok_or_else(|| format!("{channel:?} is not a Mattermost channel id"));
        }
        let name = channel.trim_start_matches('~').to_lowercase();
        match crate::config::room(&format!("~{name}")) {
            Some(_) => Ok(ImportedRoom {
                room: format!("~{name}"),
                notes: vec![format!(
                    "Mattermost channel {channel:?} is found by name in the account's team once connected"
                )],
                ..ImportedRoom::default()
            }),
            None => Err(format!(
                "{channel:?} is not a Mattermost channel name or ID:<id>"
            )),
        }
    }
}
