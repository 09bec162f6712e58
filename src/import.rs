//! `passerelle import matterbridge FILE`: a matterbridge configuration turned into this daemon's.
//!
//! matterbridge's accounts (`[irc.libera]`, `[discord.mine]`…) become accounts of the kinds that
//! take over their protocols ([`passerelle_sdk::import::MatterbridgeImport`]; this module names no
//! network), its `[[gateway]]`s links, with `in`, `out` and `inout` as directions, and its
//! `[[samechannelgateway]]`s one link per channel. `RemoteNickFormat`'s placeholders are
//! translated. Secrets are written to files (mode 0600) named by `*_file` keys, or inline with
//! `--inline-secrets`. Every option that was not carried over is listed, with what to do, in
//! [`Converted::notes`]; the daemon prints them on stderr.

use crate::registry;
use passerelle_sdk::import::{Channel, ImportedAccount, ImportedSecret, MatterbridgeImport};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest matterbridge file read.
pub const MAX_SOURCE: usize = 4 * 1024 * 1024;

/// How secrets are written.
#[derive(Debug, Clone)]
pub struct Options {
    /// Write secrets inline instead of to files.
    pub inline_secrets: bool,
    /// Where secret files go (absolute).
    pub secrets_dir: PathBuf,
}

/// The conversion.
#[derive(Debug, Default)]
pub struct Converted {
    /// The configuration file.
    pub config: String,
    /// What was not carried over and what to do, one line each.
    pub notes: Vec<String>,
    /// Secret files to write: path and content.
    pub secret_files: Vec<(PathBuf, String)>,
}

/// Keys every matterbridge account may have that this module reads itself.
const NICK_FORMAT: &str = "remotenickformat";

/// Advice for matterbridge options that no kind carries over.
fn advice(key: &str) -> &'static str {
    match key {
        "ignorenicks" | "ignoremessages" | "replacemessages" | "replacenicks" | "extractnicks" => {
            "passerelle does not filter or rewrite messages"
        }
        "showjoinpart" | "verbosejoinpart" | "nosendjoinpart" => {
            "joins and leaves are bridged where the destination shows them"
        }
        "editdisable" | "editsuffix" => {
            "edits go through where the destination can edit; elsewhere [general] edit_fallback decides (\"resend\" with \" (edited)\", or \"drop\")"
        }
        "label" => "no labels: {account} in remote_nick_format names the origin account",
        "stripnick" => "names are passed as they are",
        "showtopicchange" | "synctopic" => "topics are bridged where both sides have them",
        "quotedisable" | "quoteformat" | "quotelengthlimit" => {
            "replies are real replies where the destination has them, a short quote elsewhere"
        }
        "debug" | "logfile" => "logs go to stderr, without message text; RUST_LOG sets the level",
        "mediadownloadsize" => "each account's max_upload_bytes sets the largest file",
        "mediaserverupload" | "mediaserverdownload" | "mediadownloadpath" => {
            "files are uploaded to networks that take them and linked elsewhere; networks whose file links need a token are offered through the daemon's signed links (media_public_url)"
        }
        _ => "no equivalent",
    }
}

/// Lower-cases every key, as matterbridge reads its file case-insensitively.
fn lower(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_lowercase(), lower(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(lower).collect()),
        other => other.clone(),
    }
}

/// matterbridge's `RemoteNickFormat` in this daemon's placeholders, and what could not be kept.
pub fn nick_format(format: &str) -> (String, Vec<String>) {
    let mut out = format
        .replace("{NOPINGNICK}", "{nopingnick}")
        .replace("{NICK}", "{nick}")
        .replace("{BRIDGE}", "{account}")
        .replace("{GATEWAY}", "{link}");
    let mut lost = Vec::new();
    if out.contains("{PROTOCOL}") {
        out = out.replace("{PROTOCOL}", "{account}");
        lost.push(
            "{PROTOCOL} became {account} (the origin account's name, e.g. irc.libera)".to_owned(),
        );
    }
    for gone in ["{LABEL}", "{CHANNEL}", "{USERID}", "{TENGO}"] {
        if out.contains(gone) {
            out = out.replace(gone, "");
            lost.push(format!("{gone} has no equivalent and was removed"));
        }
    }
    (out, lost)
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        toml::Value::String(k.to_owned()).to_string()
    }
}

/// A JSON value as an inline TOML value.
fn value(v: &Value) -> String {
    match toml::Value::try_from(v) {
        Ok(t) => t.to_string(),
        Err(_) => "\"\"".to_owned(),
    }
}

struct Account<'a> {
    id: String,
    kind: &'static str,
    import: &'a dyn MatterbridgeImport,
    source: Map<String, Value>,
    imported: ImportedAccount,
    nick_format: Option<String>,
}

/// One room of a link: account, room, direction.
type Room = (String, String, &'static str);

/// Converts a matterbridge configuration.
pub fn matterbridge(source: &str, opts: &Options) -> Result<Converted, String> {
    if source.len() > MAX_SOURCE {
        return Err(format!(
            "the file is over {MAX_SOURCE} bytes; is it a matterbridge configuration?"
        ));
    }
    let table: toml::Table =
        toml::from_str(source).map_err(|e| format!("not a TOML file: {}", e.message()))?;
    let top = lower(&serde_json::to_value(&table).map_err(|e| e.to_string())?);
    let top = top.as_object().cloned().unwrap_or_default();
    let factories = registry::factories();
    let mut importers: BTreeMap<&'static str, (&'static str, &dyn MatterbridgeImport)> =
        BTreeMap::new();
    for f in &factories {
        if let Some(i) = f.matterbridge() {
            for p in i.protocols() {
                importers.insert(p, (f.kind(), i));
            }
        }
    }
    let mut out = Converted::default();
    let general = top
        .get("general")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut general_format = None;
    for (k, v) in &general {
        if k == NICK_FORMAT {
            if let Some(f) = v.as_str() {
                let (f, lost) = nick_format(f);
                out.notes.extend(
                    lost.into_iter()
                        .map(|l| format!("[general] RemoteNickFormat: {l}")),
                );
                general_format = Some(f);
            }
        } else if k != "ignorefailureonstart" {
            out.notes
                .push(format!("[general] {k}: not carried over ({})", advice(k)));
        }
    }
    // Accounts.
    let mut accounts: Vec<Account> = Vec::new();
    for (protocol, entry) in &top {
        if matches!(
            protocol.as_str(),
            "general" | "gateway" | "samechannelgateway" | "tengo"
        ) {
            if protocol == "tengo" {
                out.notes.push(
                    "[tengo]: scripts are not carried over (passerelle does not rewrite messages)"
                        .into(),
                );
            }
            continue;
        }
        let Some(entry) = entry.as_object() else {
            out.notes
                .push(format!("[{protocol}] is not a table of accounts; left out"));
            continue;
        };
        for (name, table) in entry {
            let id = format!("{protocol}.{name}");
            let Some(table) = table.as_object() else {
                out.notes
                    .push(format!("{protocol}.{name} is not a table; left out"));
                continue;
            };
            let Some((kind, import)) = importers.get(protocol.as_str()).copied() else {
                out.notes.push(format!(
                    "[{id}]: this build of passerelle has no connector for matterbridge's `{protocol}` bridge; the account and its channels are left out"
                ));
                continue;
            };
            let imported = import.account(name, table);
            let mut nick = None;
            if let Some(f) = table.get(NICK_FORMAT).and_then(Value::as_str) {
                let (f, lost) = nick_format(f);
                out.notes.extend(
                    lost.into_iter()
                        .map(|l| format!("[{id}] RemoteNickFormat: {l}")),
                );
                nick = Some(f);
            }
            let mut unused: Vec<&String> = table
                .keys()
                .filter(|k| k.as_str() != NICK_FORMAT && !imported.used.contains(&k.as_str()))
                .collect();
            unused.sort();
            for k in unused {
                out.notes
                    .push(format!("[{id}] {k}: not carried over ({})", advice(k)));
            }
            for note in &imported.notes {
                out.notes.push(note.clone());
            }
            accounts.push(Account {
                id,
                kind,
                import,
                source: table.clone(),
                imported,
                nick_format: nick,
            });
        }
    }
    // Links.
    let mut links: Vec<(String, Vec<Room>)> = Vec::new();
    let no_options = Map::new();
    let room_of = |accounts: &mut Vec<Account>,
                   notes: &mut Vec<String>,
                   gateway: &str,
                   account: &str,
                   channel: &str,
                   options: &Map<String, Value>|
     -> Option<(String, String)> {
        let Some(a) = accounts.iter_mut().find(|a| a.id == account) else {
            notes.push(format!("gateway {gateway:?}: account {account:?} is left out (see above), so is its channel"));
            return None;
        };
        let c = Channel {
            channel,
            options,
            account: &a.source,
            gateway,
        };
        match a.import.channel(&c) {
            Ok(room) => {
                a.imported.secrets.extend(room.secrets);
                notes.extend(
                    room.notes
                        .into_iter()
                        .map(|n| format!("gateway {gateway:?}: {n}")),
                );
                Some((a.id.clone(), room.room))
            }
            Err(why) => {
                notes.push(format!(
                    "gateway {gateway:?}: {account} {channel:?} left out: {why}"
                ));
                None
            }
        }
    };
    for gw in top
        .get("gateway")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = gw.get("name").and_then(Value::as_str) else {
            out.notes
                .push("a [[gateway]] without a name is left out".into());
            continue;
        };
        if gw.get("enable").and_then(Value::as_bool) != Some(true) {
            out.notes.push(format!(
                "gateway {name:?} is not enabled (enable = true) in matterbridge; left out"
            ));
            continue;
        }
        let mut rooms: Vec<Room> = Vec::new();
        for (list, direction) in [("inout", "inout"), ("in", "in"), ("out", "out")] {
            for entry in gw.get(list).and_then(Value::as_array).into_iter().flatten() {
                let (Some(account), Some(channel)) = (
                    entry.get("account").and_then(Value::as_str),
                    entry.get("channel").and_then(Value::as_str),
                ) else {
                    out.notes.push(format!(
                        "gateway {name:?}: an entry without account or channel is left out"
                    ));
                    continue;
                };
                let options = entry
                    .get("options")
                    .and_then(Value::as_object)
                    .unwrap_or(&no_options);
                if let Some((a, r)) = room_of(
                    &mut accounts,
                    &mut out.notes,
                    name,
                    account,
                    channel,
                    options,
                ) {
                    match rooms.iter_mut().find(|(x, y, _)| *x == a && *y == r) {
                        // In and out of the same room: both ways.
                        Some(existing) if existing.2 != direction => existing.2 = "inout",
                        Some(_) => {}
                        None => rooms.push((a, r, direction)),
                    }
                }
            }
        }
        links.push((name.to_owned(), rooms));
    }
    for gw in top
        .get("samechannelgateway")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = gw
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("samechannel");
        if gw.get("enable").and_then(Value::as_bool) != Some(true) {
            out.notes.push(format!(
                "samechannelgateway {name:?} is not enabled in matterbridge; left out"
            ));
            continue;
        }
        let list = |k: &str| -> Vec<String> {
            gw.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let channels = list("channels");
        for channel in &channels {
            let link = if channels.len() == 1 {
                name.to_owned()
            } else {
                format!("{name}.{channel}")
            };
            let mut rooms = Vec::new();
            for account in list("accounts") {
                if let Some((a, r)) = room_of(
                    &mut accounts,
                    &mut out.notes,
                    &link,
                    &account,
                    channel,
                    &no_options,
                ) {
                    rooms.push((a, r, "inout"));
                }
            }
            links.push((link, rooms));
        }
    }
    links.retain(|(name, rooms)| {
        if rooms.len() < 2 {
            out.notes.push(format!(
                "gateway {name:?} has fewer than two rooms left; not written"
            ));
            false
        } else {
            true
        }
    });
    // The file.
    let mut config = String::from(
        "# Converted from a matterbridge configuration by `passerelle import matterbridge`.\n# What was not carried over was listed on stderr; `passerelle check` checks this file.\n",
    );
    if let Some(f) = &general_format {
        config.push_str(&format!(
            "\n[general]\nremote_nick_format = {}\n",
            value(&Value::from(f.as_str()))
        ));
    }
    for a in &accounts {
        config.push_str(&format!(
            "\n[accounts.{}]\nkind = {}\n",
            key(&a.id),
            value(&Value::from(a.kind))
        ));
        if a.imported.disabled {
            config.push_str("enabled = false\n");
        }
        for (k, v) in &a.imported.table {
            config.push_str(&format!("{} = {}\n", key(k), value(v)));
        }
        let mut by_key: BTreeMap<&str, Vec<&ImportedSecret>> = BTreeMap::new();
        for s in &a.imported.secrets {
            by_key.entry(s.key.as_str()).or_default().push(s);
        }
        for (k, lines) in by_key {
            if opts.inline_secrets && lines.len() == 1 && lines[0].inline {
                config.push_str(&format!(
                    "{} = {}\n",
                    key(k),
                    value(&Value::from(lines[0].line.as_str()))
                ));
                continue;
            }
            let path = opts.secrets_dir.join(format!("{}.{k}", a.id));
            let body: String = lines.iter().map(|s| format!("{}\n", s.line)).collect();
            config.push_str(&format!(
                "{} = {}\n",
                key(&format!("{k}_file")),
                value(&Value::from(path.display().to_string()))
            ));
            out.secret_files.push((path, body));
        }
        if let Some(f) = &a.nick_format
            && Some(f) != general_format.as_ref()
        {
            config.push_str(&format!(
                "remote_nick_format = {}\n",
                value(&Value::from(f.as_str()))
            ));
        }
    }
    for (name, rooms) in &links {
        config.push_str(&format!(
            "\n[[links]]\nname = {}\nrooms = [\n",
            value(&Value::from(name.as_str()))
        ));
        for (a, r, d) in rooms {
            let direction = if *d == "inout" {
                String::new()
            } else {
                format!(", direction = \"{d}\"")
            };
            config.push_str(&format!(
                "  {{ account = {}, room = {}{direction} }},\n",
                value(&Value::from(a.as_str())),
                value(&Value::from(r.as_str()))
            ));
        }
        config.push_str("]\n");
    }
    if !out.secret_files.is_empty() {
        out.notes.push(format!(
            "{} secret(s) were written to files under {} (readable by you only) and are named by *_file keys; keep them with the configuration (or run again with --inline-secrets)",
            out.secret_files.len(),
            opts.secrets_dir.display()
        ));
    }
    out.config = config;
    Ok(out)
}

/// Writes the secret files: the directory 0700, each file 0600.
pub fn write_secrets(files: &[(PathBuf, String)], dir: &Path) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    for (path, body) in files {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        use std::io::Write;
        options.open(path)?.write_all(body.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_formats_are_translated_and_what_is_lost_is_said() {
        assert_eq!(
            nick_format("[{PROTOCOL}] <{NICK}> ").0,
            "[{account}] <{nick}> "
        );
        let (f, lost) = nick_format("<{NOPINGNICK}@{BRIDGE}/{GATEWAY}> {LABEL}");
        assert_eq!(f, "<{nopingnick}@{account}/{link}> ");
        assert_eq!(lost.len(), 1);
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_with_where() {
        let opts = Options {
            inline_secrets: true,
            secrets_dir: PathBuf::from("/tmp"),
        };
        let e = matterbridge("[irc.x\nServer=", &opts).unwrap_err();
        assert!(e.starts_with("not a TOML file"), "{e}");
        assert!(matterbridge(&"#".repeat(MAX_SOURCE + 1), &opts).is_err());
    }
}
