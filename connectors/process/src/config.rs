//! The account table of `kind = "process"`.

use passerelle_sdk::config::{parse_table, timeout};
use passerelle_sdk::{Capabilities, ConfigIssue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// The program's environment besides `PATH` and `LANG` (nothing else of the daemon's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What the core may send the program (`Capabilities` field names); default none: plain
    /// text messages only.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The program's own table, passed to it in `init` as it is.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// Rooms whose names start with one of these are one person's private chat (the daemon then
    /// keeps them out of other private chats and of two links). Default none: every room is a
    /// group.
    #[serde(default)]
    pub private_room_prefixes: Vec<String>,
    /// Seconds the program has to answer `init` with `ready`. Default 10.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_secs: u64,
    /// Seconds a send may wait for its answer before it counts as `disconnected`. Default 60.
    #[serde(default = "default_send_timeout")]
    pub send_timeout_secs: u64,
    /// Seconds the program has to exit after `shutdown` before it is killed. Default 5.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// The longest line read from the program, in bytes. Default 1 MiB.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
}

fn default_start_timeout() -> u64 {
    10
}

fn default_send_timeout() -> u64 {
    60
}

fn default_grace() -> u64 {
    5
}

fn default_max_line() -> usize {
    1024 * 1024
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Its environment besides `PATH` and `LANG`.
    pub env: BTreeMap<String, String>,
    /// What the core may send it.
    pub capabilities: Capabilities,
    /// The configured capability names, to name what a program lacks.
    pub capability_names: Vec<String>,
    /// Passed to the program in `init`.
    pub settings: serde_json::Value,
    /// `private_room_prefixes`.
    pub private_room_prefixes: Vec<String>,
    /// `start_timeout_secs`.
    pub start_timeout: Duration,
    /// `send_timeout_secs`.
    pub send_timeout: Duration,
    /// `shutdown_grace_secs`.
    pub shutdown_grace: Duration,
    /// `max_line_bytes`.
    pub max_line_bytes: usize,
}

/// The `Capabilities` field names, in order.
pub const CAPABILITY_NAMES: [&str; 12] = [
    "edits",
    "deletes",
    "reactions",
    "replies",
    "threads",
    "attachments",
    "rich_text",
    "per_message_identity",
    "puppets",
    "typing",
    "membership",
    "topic",
];

/// Sets the capability `name` in `caps`; false when there is none of that name.
pub fn set_capability(caps: &mut Capabilities, name: &str) -> bool {
    let field = match name {
        "edits" => &mut caps.edits,
        "deletes" => &mut caps.deletes,
        "reactions" => &mut caps.reactions,
        "replies" => &mut caps.replies,
        "threads" => &mut caps.threads,
        "attachments" => &mut caps.attachments,
        "rich_text" => &mut caps.rich_text,
        "per_message_identity" => &mut caps.per_message_identity,
        "puppets" => &mut caps.puppets,
        "typing" => &mut caps.typing,
        "membership" => &mut caps.membership,
        "topic" => &mut caps.topic,
        _ => return false,
    };
    *field = true;
    true
}

/// The names of the capabilities set in `caps`.
pub fn capability_names(caps: &Capabilities) -> Vec<&'static str> {
    let flags = [
        caps.edits,
        caps.deletes,
        caps.reactions,
        caps.replies,
        caps.threads,
        caps.attachments,
        caps.rich_text,
        caps.per_message_identity,
        caps.puppets,
        caps.typing,
        caps.membership,
        caps.topic,
    ];
    CAPABILITY_NAMES
        .iter()
        .zip(flags)
        .filter_map(|(n, on)| on.then_some(*n))
        .collect()
}

impl ProcessConfig {
    /// Parses and checks the table, every problem at once.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: ProcessConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        match raw.command.first() {
            None => issues.push(ConfigIssue::new(
                "command",
                "empty: give the program and its arguments, e.g. [\"python3\", \"connector.py\"]",
            )),
            Some(program) if program.trim().is_empty() => {
                issues.push(ConfigIssue::new("command[0]", "empty program name"));
            }
            Some(_) => {}
        }
        for key in raw.env.keys() {
            let valid = !key.is_empty()
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                issues.push(ConfigIssue::new(
                    format!("env.{}", passerelle_sdk::config::path_key(key)),
                    "not an environment variable name (letters, digits and _)",
                ));
            }
        }
        let mut capabilities = Capabilities::default();
        for (i, name) in raw.capabilities.iter().enumerate() {
            if !set_capability(&mut capabilities, name) {
                issues.push(ConfigIssue::new(
                    format!("capabilities[{i}]"),
                    format!(
                        "unknown capability {name:?} (known: {})",
                        CAPABILITY_NAMES.join(", ")
                    ),
                ));
            }
        }
        let settings = raw.settings.unwrap_or_else(|| serde_json::json!({}));
        if !settings.is_object() {
            issues.push(ConfigIssue::new("settings", "must be a table"));
        }
        let start_timeout = timeout("start_timeout_secs", raw.start_timeout_secs, &mut issues);
        let send_timeout = timeout("send_timeout_secs", raw.send_timeout_secs, &mut issues);
        for (i, prefix) in raw.private_room_prefixes.iter().enumerate() {
            if prefix.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("private_room_prefixes[{i}]"),
                    "empty: it would make every room private",
                ));
            }
        }
        if raw.max_line_bytes < 1024 {
            issues.push(ConfigIssue::new("max_line_bytes", "must be at least 1024"));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Settings {
            command: raw.command,
            env: raw.env,
            capabilities,
            capability_names: raw.capabilities,
            settings,
            private_room_prefixes: raw.private_room_prefixes,
            start_timeout,
            send_timeout,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs),
            max_line_bytes: raw.max_line_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_is_checked_whole() {
        let s = ProcessConfig::parse(json!({
            "command": ["python3", "x.py"],
            "capabilities": ["edits", "replies"],
            "settings": {"dir": "/tmp"},
        }))
        .expect("valid");
        assert!(s.capabilities.edits && s.capabilities.replies && !s.capabilities.deletes);
        assert_eq!(capability_names(&s.capabilities), ["edits", "replies"]);
        assert_eq!(s.settings["dir"], "/tmp");
        let issues = ProcessConfig::parse(json!({
            "command": [],
            "capabilities": ["edit"],
            "env": {"BAD-NAME": "x"},
            "settings": 3,
            "send_timeout_secs": 0,
        }))
        .expect_err("invalid");
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "command",
                "env.BAD-NAME",
                "capabilities[0]",
                "settings",
                "send_timeout_secs"
            ]
        );
    }
}
