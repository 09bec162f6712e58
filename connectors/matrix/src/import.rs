//! What the Matrix connector takes over from matterbridge's `[matrix.NAME]` tables (bot mode:
//! matterbridge logs in as one user too).

use passerelle_sdk::import::{Channel, ImportedAccount, ImportedRoom, MatterbridgeImport, text};
use serde_json::{Map, Value};

/// matterbridge's `matrix` protocol.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["matrix"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "server",
            "login",
            "password",
            "mxid",
            "token",
            "nohomeserversuffix",
            "htmldisable",
        ]);
        a.set("mode", "bot");
        let server = text(t, "server").unwrap_or("https://matrix.example.org");
        let homeserver = if server.starts_with("http://") || server.starts_with("https://") {
            server.trim_end_matches('/').to_owned()
        } else {
            format!("https://{server}")
        };
        let host = homeserver
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_owned();
        a.set("homeserver", homeserver);
        let login = text(t, "mxid").or_else(|| text(t, "login"));
        match login {
            Some(l) if l.starts_with('@') && l.contains(':') => a.set("user", l),
            Some(l) => {
                a.set("user", format!("@{l}:{host}"));
                a.note(format!("[matrix.{name}]: the bot's user id was made from Login and the homeserver's host (@{l}:{host}); if your server name differs from that host (delegation), correct `user`"));
            }
            None => {
                a.set("user", "@bridge:example.org");
                a.disabled = true;
                a.note(format!(
                    "[matrix.{name}] has no Login: set `user` and enable the account"
                ));
            }
        }
        match (text(t, "password"), text(t, "token")) {
            (Some(p), _) => a.secret("password", p),
            (None, Some(token)) => a.secret("access_token", token),
            (None, None) => {
                a.disabled = true;
                a.note(format!(
                    "[matrix.{name}] has no Password: set password_file and enable the account"
                ));
            }
        }
        a.note(format!("[matrix.{name}]: passerelle bridges encrypted rooms too, and can show other networks' people as Matrix users (mode = \"appservice\", see README)"));
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let room = c.channel.trim();
        if room.starts_with('#') || room.starts_with('!') {
            Ok(ImportedRoom {
                room: room.to_owned(),
                ..ImportedRoom::default()
            })
        } else {
            Err(format!(
                "{room:?} is not a Matrix room: write its alias (#room:server) or id (!…)"
            ))
        }
    }
}
