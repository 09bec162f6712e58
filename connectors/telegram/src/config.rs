//! The Telegram account's config: `[accounts.NAME]` with `kind = "telegram"`.

use passerelle_sdk::config::{Media, check_base_url, parse_table, timeout};
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The shortest webhook secret accepted (Telegram takes from 1 character).
const MIN_SECRET: usize = 32;

/// How updates reach the bridge.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The bridge asks for updates (`getUpdates`, long polling). Works behind NAT; the offset of
    /// the last update handled is kept in the store, so a restart neither replays nor skips.
    #[default]
    Polling,
    /// Telegram calls the daemon at `webhook_url` (which must reach `/hooks/NAME` on the daemon's
    /// listener over HTTPS on port 443, 80, 88 or 8443).
    Webhook,
}

/// The keys of a Telegram account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather (`123456789:AA…`).
    pub token: Option<Secret>,
    /// File holding `token`.
    pub token_file: Option<PathBuf>,
    /// `polling` (default) or `webhook`.
    #[serde(default)]
    pub mode: Mode,
    /// Webhook mode: the public HTTPS URL Telegram calls, ending in `/hooks/NAME`.
    pub webhook_url: Option<String>,
    /// Webhook mode: the secret Telegram sends with every call
    /// (`X-Telegram-Bot-Api-Secret-Token`), 32–256 characters of `A-Z a-z 0-9 _ -` (Telegram
    /// takes from 1, but the secret is all that stands between the public hook and forged
    /// updates: `openssl rand -hex 32`).
    pub webhook_secret: Option<Secret>,
    /// File holding `webhook_secret`.
    pub webhook_secret_file: Option<PathBuf>,
    /// The Bot API server. Default `https://api.telegram.org` (a self-hosted Bot API server
    /// works too). Must be `https`, except on loopback.
    pub api_base: Option<String>,
    /// Polling: how long one `getUpdates` call waits for updates, in seconds (1–50). Default 50.
    #[serde(default = "default_poll")]
    pub poll_timeout_secs: u64,
    /// Where people on other networks reach the daemon's `[http]` listener. Telegram's file links
    /// hold the bot's token, so files are offered as signed links through the daemon
    /// (`…/accounts/NAME/media/…`) when this is set, and named in the text only when not.
    pub media_public_url: Option<String>,
    /// The largest file sent to or offered from Telegram, in bytes. Default 20 MiB (what the Bot
    /// API lets a bot download; uploads may be up to 50 MB).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Fetch files from loopback and private addresses too (default false: public only).
    #[serde(default)]
    pub media_fetch_private: bool,
    /// Seconds a Bot API call (other than the long poll) may take. Default 30.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_poll() -> u64 {
    50
}

fn default_max_upload() -> u64 {
    20 * 1024 * 1024
}

fn default_timeout() -> u64 {
    30
}

/// A checked config, secrets read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bot token.
    pub token: Secret,
    /// How updates arrive.
    pub mode: Mode,
    /// Webhook mode: the URL and the secret.
    pub webhook: Option<(String, Secret)>,
    /// API base without trailing `/`.
    pub api_base: String,
    /// Long-poll length.
    pub poll_timeout: Duration,
    /// `media_public_url`, `max_upload_bytes`, `media_fetch_private`.
    pub media: Media,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

/// Whether `room` is a chat id: an integer (negative for groups and channels).
pub fn chat_id(room: &str) -> Option<i64> {
    room.parse::<i64>().ok().filter(|id| *id != 0)
}

impl TelegramConfig {
    /// Parses and checks an account table, reporting every problem at once.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: TelegramConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        let token = match secret::require("token", raw.token.as_ref(), raw.token_file.as_ref()) {
            Ok(t)
                if t.expose().split_once(':').is_some_and(|(id, rest)| {
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
                }) =>
            {
                Some(t)
            }
            Ok(_) => {
                issues.push(ConfigIssue::new(
                    "token",
                    "not a bot token (expected 123456789:AA… from @BotFather)",
                ));
                None
            }
            Err(e) => {
                issues.push(e);
                None
            }
        };
        let secret = match secret::resolve(
            "webhook_secret",
            raw.webhook_secret.as_ref(),
            raw.webhook_secret_file.as_ref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                issues.push(e);
                None
            }
        };
        let webhook = match raw.mode {
            Mode::Polling => {
                for (set, key) in [
                    (raw.webhook_url.is_some(), "webhook_url"),
                    (secret.is_some(), "webhook_secret"),
                ] {
                    if set {
                        issues.push(ConfigIssue::new(key, "only used with mode = \"webhook\""));
                    }
                }
                None
            }
            Mode::Webhook => {
                match &raw.webhook_url {
                    None => issues.push(ConfigIssue::new(
                        "webhook_url",
                        "missing (mode = \"webhook\")",
                    )),
                    Some(u) if !u.starts_with("https://") && check_base_url(u).is_err() => issues
                        .push(ConfigIssue::new(
                            "webhook_url",
                            "Telegram calls https URLs only",
                        )),
                    Some(_) => {}
                }
                match &secret {
                    None => issues.push(ConfigIssue::new(
                        "webhook_secret",
                        "missing (mode = \"webhook\"; set webhook_secret or webhook_secret_file)",
                    )),
                    Some(s) => {
                        let v = s.expose();
                        if !v
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                            || v.len() > 256
                        {
                            issues.push(ConfigIssue::new(
                                "webhook_secret",
                                "must be 32-256 characters of A-Z, a-z, 0-9, _ and -",
                            ));
                        } else if v.len() < MIN_SECRET {
                            issues.push(ConfigIssue::new(
                                "webhook_secret",
                                format!(
                                    "is {} characters; at least {MIN_SECRET} are needed to keep forged updates out (e.g. openssl rand -hex 32)",
                                    v.len()
                                ),
                            ));
                        }
                    }
                }
                raw.webhook_url.clone().zip(secret.clone())
            }
        };
        let api_base = raw
            .api_base
            .as_deref()
            .unwrap_or("https://api.telegram.org")
            .trim_end_matches('/')
            .to_owned();
        if let Err(why) = check_base_url(&api_base) {
            issues.push(ConfigIssue::new("api_base", why));
        }
        if !(1..=50).contains(&raw.poll_timeout_secs) {
            issues.push(ConfigIssue::new("poll_timeout_secs", "must be 1 to 50"));
        }
        let request_timeout = timeout(
            "request_timeout_secs",
            raw.request_timeout_secs,
            &mut issues,
        );
        let media = Media::check(
            raw.media_public_url.as_deref(),
            raw.max_upload_bytes,
            raw.media_fetch_private,
            &mut issues,
        );
        match token {
            Some(token) if issues.is_empty() => Ok(Settings {
                token,
                mode: raw.mode,
                webhook,
                api_base,
                poll_timeout: Duration::from_secs(raw.poll_timeout_secs),
                media,
                request_timeout,
            }),
            _ => Err(issues),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(v: serde_json::Value) -> Vec<String> {
        TelegramConfig::parse(v)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.path)
            .collect()
    }

    #[test]
    fn polling_needs_a_token_only() {
        let ok = TelegramConfig::parse(json!({"token": "123456:ABC-DEF"})).unwrap();
        assert_eq!(ok.mode, Mode::Polling);
        assert_eq!(ok.api_base, "https://api.telegram.org");
        assert_eq!(paths(json!({})), vec!["token"]);
        assert_eq!(paths(json!({"token": "nonsense"})), vec!["token"]);
        assert_eq!(
            paths(
                json!({"token": "1:x", "webhook_url": "https://x/hooks/t", "poll_timeout_secs": 60})
            ),
            vec!["webhook_url", "poll_timeout_secs"]
        );
    }

    #[test]
    fn webhook_mode_needs_a_url_and_a_well_formed_secret() {
        assert_eq!(
            paths(json!({"token": "1:x", "mode": "webhook"})),
            vec!["webhook_url", "webhook_secret"]
        );
        assert_eq!(
            paths(
                json!({"token": "1:x", "mode": "webhook", "webhook_url": "http://bridge.example.org/hooks/t",
                         "webhook_secret": "has space"})
            ),
            vec!["webhook_url", "webhook_secret"]
        );
        let short = TelegramConfig::parse(json!({"token": "1:x", "mode": "webhook",
            "webhook_url": "https://bridge.example.org/hooks/t", "webhook_secret": "s3cret_-X"}))
        .unwrap_err();
        assert_eq!(
            short[0].to_string(),
            "webhook_secret: is 9 characters; at least 32 are needed to keep forged updates out (e.g. openssl rand -hex 32)"
        );
        let ok = TelegramConfig::parse(json!({"token": "1:x", "mode": "webhook",
            "webhook_url": "https://bridge.example.org/hooks/t",
            "webhook_secret": "s3cret_-X0123456789abcdef0123456789"}))
        .unwrap();
        assert_eq!(ok.webhook.unwrap().0, "https://bridge.example.org/hooks/t");
    }

    #[test]
    fn chat_ids_are_nonzero_integers() {
        assert_eq!(chat_id("-1001234567890"), Some(-1001234567890));
        assert_eq!(chat_id("42"), Some(42));
        assert_eq!(chat_id("0"), None);
        assert_eq!(chat_id("@channel"), None);
    }
}
