//! What the XMPP connector takes over from matterbridge's `[xmpp.NAME]` tables.

use passerelle_sdk::import::{
    Channel, ImportedAccount, ImportedRoom, ImportedSecret, MatterbridgeImport, flag, host_port,
    text,
};
use serde_json::{Map, Value};

/// matterbridge's `xmpp` protocol.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["xmpp"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "jid",
            "password",
            "server",
            "nick",
            "muc",
            "notls",
            "skiptlsverify",
        ]);
        match text(t, "jid") {
            Some(jid) => a.set("jid", jid),
            None => {
                a.set("jid", "bridge@example.org");
                a.disabled = true;
                a.note(format!(
                    "[xmpp.{name}] has no Jid: set `jid` and enable the account"
                ));
            }
        }
        if let Some(p) = text(t, "password") {
            a.secret("password", p);
        }
        if let Some(server) = text(t, "server") {
            let (host, port) = host_port(server);
            a.set("server", host);
            if let Some(port) = port {
                a.set("port", port);
            }
        }
        if let Some(nick) = text(t, "nick") {
            a.set("nick", nick);
        }
        if flag(t, "notls") == Some(true) {
            a.note(format!("[xmpp.{name}] used a plain connection; passerelle always uses TLS (STARTTLS by default)"));
        }
        if flag(t, "skiptlsverify") == Some(true) {
            a.note(format!("[xmpp.{name}] skipped certificate checks; passerelle always checks them: give a private CA with tls_ca_file"));
        }
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let room = c.channel.trim();
        if room.is_empty() {
            return Err("an empty XMPP room".into());
        }
        let room = if room.contains('@') {
            room.to_owned()
        } else {
            let muc = text(c.account, "muc").ok_or_else(|| {
                format!("the room {room:?} needs its account's Muc (the conference service) to be a room address")
            })?;
            format!("{room}@{muc}")
        };
        let mut r = ImportedRoom {
            room: room.clone(),
            ..ImportedRoom::default()
        };
        if let Some(key) = text(c.options, "key") {
            r.secrets.push(ImportedSecret {
                key: "room_passwords".into(),
                line: format!("{room} {key}"),
                inline: false,
            });
        }
        Ok(r)
    }
}
