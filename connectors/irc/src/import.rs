//! What the IRC connector takes over from matterbridge's `[irc.NAME]` tables.

use passerelle_sdk::import::{
    Channel, ImportedAccount, ImportedRoom, ImportedSecret, MatterbridgeImport, flag, host_port,
    text,
};
use serde_json::{Map, Value};

/// matterbridge's `irc` protocol.
pub struct Import;

/// `1m`, `30s`, `90` (seconds) as seconds.
fn seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Some(m) = v.strip_suffix('m') {
        return m.trim().parse::<u64>().ok().map(|m| m * 60);
    }
    v.strip_suffix('s').unwrap_or(v).trim().parse().ok()
}

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["irc"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&[
            "server",
            "usetls",
            "nick",
            "password",
            "usesasl",
            "nickservnick",
            "nickservpassword",
            "nickservusername",
            "messagedelay",
            "pingdelay",
            "messagelength",
            "messagesplit",
            "messagequeue",
            "skiptlsverify",
        ]);
        let tls = flag(t, "usetls").unwrap_or(false);
        match text(t, "server") {
            Some(server) => {
                let (host, port) = host_port(server);
                a.set("server", host);
                a.set("port", port.unwrap_or(if tls { 6697 } else { 6667 }));
            }
            None => {
                a.set("server", "irc.example.org");
                a.disabled = true;
                a.note(format!(
                    "[irc.{name}] has no Server: set `server` and enable the account"
                ));
            }
        }
        a.set("tls", tls);
        if !tls {
            a.note(format!("[irc.{name}] connects without TLS as before; most networks take TLS on port 6697 (tls = true)"));
        }
        a.set("nick", text(t, "nick").unwrap_or("passerelle"));
        if let Some(p) = text(t, "password") {
            a.secret("password", p);
        }
        let login = text(t, "nickservnick").or_else(|| text(t, "nickservusername"));
        if let (Some(user), Some(pass)) = (login, text(t, "nickservpassword")) {
            a.set("sasl_username", user);
            a.secret("sasl_password", pass);
            if flag(t, "usesasl") != Some(true) {
                a.note(format!("[irc.{name}] identified to NickServ by message; passerelle logs in with SASL PLAIN, with the same account and password (sasl_username, sasl_password), which Libera, OFTC and most networks take"));
            }
        }
        if let Some(ms) = t
            .get("messagedelay")
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0)
        {
            let rate = (1000.0 / ms as f64 * 100.0).round() / 100.0;
            a.set("send_rate_per_second", rate);
        }
        if let Some(secs) = text(t, "pingdelay").and_then(seconds).filter(|s| *s > 0) {
            a.set("ping_interval_secs", secs);
        }
        if flag(t, "skiptlsverify") == Some(true) {
            a.note(format!("[irc.{name}] skipped certificate checks; passerelle always checks them: give the server's CA with tls_ca_file if it is a private one"));
        }
        a.note(format!("[irc.{name}]: long messages are cut into at most max_lines lines (default 5) with a link to the rest when pastes are on, instead of MessageLength/MessageSplit"));
        a
    }

    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        let room = c.channel.trim().to_lowercase();
        if !room.starts_with(['#', '&']) {
            return Err(format!(
                "{:?} is not an IRC channel (it starts with #)",
                c.channel
            ));
        }
        let mut r = ImportedRoom {
            room: room.clone(),
            ..ImportedRoom::default()
        };
        if let Some(key) = text(c.options, "key") {
            r.secrets.push(ImportedSecret {
                key: "channel_keys".into(),
                line: format!("{room} {key}"),
                inline: false,
            });
        }
        Ok(r)
    }
}
