//! The Signal account's config: `[accounts.NAME]` with `kind = "signal"`.

use passerelle_sdk::ConfigIssue;
use passerelle_sdk::config::{Media, check_base_url, parse_table, timeout};
use serde::Deserialize;
use std::time::Duration;

/// The keys of a Signal account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    /// The Signal account signal-cli speaks as: its phone number in international form
    /// (`+15551234567`), registered or linked with signal-cli beforehand.
    pub account: String,
    /// Where signal-cli's HTTP daemon listens (`signal-cli -a ACCOUNT daemon --http=HOST:PORT`).
    /// Default `http://127.0.0.1:8080`. Plain http only to a loopback address: signal-cli's HTTP
    /// daemon has no authentication of its own, so keep it on loopback or behind a TLS proxy.
    pub url: Option<String>,
    /// Where people on other networks reach the daemon's `[http]` listener. Signal attachments
    /// live in signal-cli's data dir, so they are offered as signed links through the daemon
    /// (`…/accounts/NAME/media/…`) when this is set, and named in the text only when not.
    pub media_public_url: Option<String>,
    /// The largest file sent to or offered from Signal, in bytes. Default 100 MiB (Signal's own
    /// limit).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Fetch files from loopback and private addresses too (default false: public only).
    #[serde(default)]
    pub media_fetch_private: bool,
    /// Seconds a JSON-RPC call may take. Default 60 (a send to a large group takes a while).
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_max_upload() -> u64 {
    100 * 1024 * 1024
}

fn default_timeout() -> u64 {
    60
}

/// A checked config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The account's number.
    pub account: String,
    /// signal-cli's base URL, no trailing `/`.
    pub url: String,
    /// `media_public_url`, `max_upload_bytes`, `media_fetch_private`.
    pub media: Media,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

/// Whether `s` is a phone number in international form.
pub fn phone(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (6..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `s` is a UUID (a Signal account id, ACI).
pub fn uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The group id of a `group:<base64>` room.
pub fn group_of(room: &str) -> Option<&str> {
    room.strip_prefix("group:").filter(|id| {
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b))
    })
}

impl SignalConfig {
    /// Parses and checks an account table, reporting every problem at once.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: SignalConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        if !phone(&raw.account) {
            issues.push(ConfigIssue::new(
                "account",
                "must be the account's phone number in international form (+15551234567)",
            ));
        }
        let url = raw
            .url
            .as_deref()
            .unwrap_or("http://127.0.0.1:8080")
            .trim_end_matches('/')
            .to_owned();
        if let Err(why) = check_base_url(&url) {
            issues.push(ConfigIssue::new("url", why));
        }
        let media = Media::check(
            raw.media_public_url.as_deref(),
            raw.max_upload_bytes,
            raw.media_fetch_private,
            &mut issues,
        );
        let request_timeout = timeout(
            "request_timeout_secs",
            raw.request_timeout_secs,
            &mut issues,
        );
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Settings {
            account: raw.account,
            url,
            media,
            request_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_account_and_url_are_checked() {
        let ok = SignalConfig::parse(json!({"account": "+15551230000"})).unwrap();
        assert_eq!(ok.url, "http://127.0.0.1:8080");
        let err = SignalConfig::parse(
            json!({"account": "15551230000", "url": "http://signal.example.org:8080"}),
        )
        .unwrap_err();
        let paths: Vec<&str> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, vec!["account", "url"]);
    }

    #[test]
    fn rooms_are_numbers_uuids_or_groups() {
        assert!(phone("+33123456789"));
        assert!(!phone("33123456789"));
        assert!(uuid("7ccae375-cd51-4c82-8b1e-7be3280aa485"));
        assert!(!uuid("7ccae375cd514c828b1e7be3280aa48500000"));
        assert_eq!(
            group_of("group:Pmpi+EfPWmsxiomLe9Nx2XF9HOE483p6iKiFj65iMwI="),
            Some("Pmpi+EfPWmsxiomLe9Nx2XF9HOE483p6iKiFj65iMwI=")
        );
        assert_eq!(group_of("group:"), None);
        assert_eq!(group_of("group:a b"), None);
    }
}
