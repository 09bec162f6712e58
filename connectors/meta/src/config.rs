//! The config of a Meta account: `[accounts.NAME]` with `kind = "whatsapp"`, `"messenger"` or
//! `"instagram"`. One struct serves the three kinds; each kind needs its own id key and refuses
//! the other kinds' (the issue names the key).

use crate::kind::Kind;
use passerelle_sdk::config::{Media, parse_table, timeout};
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The keys of a Meta account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// WhatsApp: the id of the business phone number (Meta's `PHONE_NUMBER_ID`, not the number).
    pub phone_number_id: Option<String>,
    /// Messenger: the id of the Facebook Page people write to.
    pub page_id: Option<String>,
    /// Instagram: the id of the Instagram professional account people write to.
    pub instagram_id: Option<String>,
    /// The access token the Graph API is called with (a system user's token for WhatsApp, the
    /// Page's token for Messenger, the Instagram user token for Instagram).
    pub access_token: Option<Secret>,
    /// File holding `access_token`.
    pub access_token_file: Option<PathBuf>,
    /// The app secret: Meta signs every webhook call with it (`X-Hub-Signature-256`).
    pub app_secret: Option<Secret>,
    /// File holding `app_secret`.
    pub app_secret_file: Option<PathBuf>,
    /// The verify token you typed into the app's webhook settings; Meta's subscription check
    /// must present it.
    pub verify_token: Option<Secret>,
    /// File holding `verify_token`.
    pub verify_token_file: Option<PathBuf>,
    /// The Graph API's base URL with its version. Default `https://graph.facebook.com/v23.0`
    /// (Instagram: `https://graph.instagram.com/v23.0`). Must be `https`, except on loopback.
    pub api_base: Option<String>,
    /// Where people on other networks reach the daemon's `[http]` listener. When set, files people
    /// send on this network are offered to other networks as signed links through the daemon
    /// (`…/accounts/NAME/media/…`), which fetches them with the account's token; when not, a file
    /// that needs the token is named in the text only. Messenger and Instagram files have public
    /// links of their own and are passed on as they are.
    pub media_public_url: Option<String>,
    /// The largest file sent to or offered from this network, in bytes. Default 16 MiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Fetch files from loopback and private addresses too (default false: public only).
    #[serde(default)]
    pub media_fetch_private: bool,
    /// Seconds a Graph API call may take. Default 30.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_max_upload() -> u64 {
    16 * 1024 * 1024
}

fn default_timeout() -> u64 {
    30
}

/// A checked config, secrets read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which network.
    pub kind: Kind,
    /// The phone number, Page or Instagram account id the account speaks as.
    pub id: String,
    /// Graph API token.
    pub access_token: Secret,
    /// Webhook signing key.
    pub app_secret: Secret,
    /// Webhook subscription token.
    pub verify_token: Secret,
    /// Graph API base, no trailing `/`.
    pub api_base: String,
    /// `media_public_url`, `max_upload_bytes`, `media_fetch_private`.
    pub media: Media,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

/// Whether `id` is a Meta numeric id (phone number ids, Page ids, PSIDs, IGSIDs, WhatsApp ids).
pub fn numeric(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
}

impl MetaConfig {
    /// Parses and checks an account table of `kind`, reporting every problem at once.
    pub fn parse(kind: Kind, table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: MetaConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        let ids = [
            (Kind::WhatsApp, "phone_number_id", &raw.phone_number_id),
            (Kind::Messenger, "page_id", &raw.page_id),
            (Kind::Instagram, "instagram_id", &raw.instagram_id),
        ];
        let mut id = String::new();
        for (k, key, value) in ids {
            match (k == kind, value) {
                (true, Some(v)) if numeric(v) => id = v.clone(),
                (true, Some(_)) => issues.push(ConfigIssue::new(key, "must be Meta's numeric id")),
                (true, None) => issues.push(ConfigIssue::new(key, "missing")),
                (false, Some(_)) => issues.push(ConfigIssue::new(
                    key,
                    format!("is not a key of kind \"{}\"", kind.name()),
                )),
                (false, None) => {}
            }
        }
        let mut need =
            |key: &str, value: &Option<Secret>, file: &Option<PathBuf>| match secret::require(
                key,
                value.as_ref(),
                file.as_ref(),
            ) {
                Ok(s) if s.expose().is_empty() => {
                    issues.push(ConfigIssue::new(key, "is empty"));
                    None
                }
                Ok(s) => Some(s),
                Err(e) => {
                    issues.push(e);
                    None
                }
            };
        let access_token = need("access_token", &raw.access_token, &raw.access_token_file);
        let app_secret = need("app_secret", &raw.app_secret, &raw.app_secret_file);
        let verify_token = need("verify_token", &raw.verify_token, &raw.verify_token_file);
        let api_base = raw
            .api_base
            .clone()
            .unwrap_or_else(|| kind.default_api_base().to_owned())
            .trim_end_matches('/')
            .to_owned();
        if let Err(why) = passerelle_sdk::config::check_base_url(&api_base) {
            issues.push(ConfigIssue::new("api_base", why));
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
        match (access_token, app_secret, verify_token) {
            (Some(access_token), Some(app_secret), Some(verify_token)) if issues.is_empty() => {
                Ok(Settings {
                    kind,
                    id,
                    access_token,
                    app_secret,
                    verify_token,
                    api_base,
                    media,
                    request_timeout,
                })
            }
            _ => Err(issues),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(r: Result<Settings, Vec<ConfigIssue>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.path)
            .collect()
    }

    #[test]
    fn a_whatsapp_account_needs_its_id_and_three_secrets() {
        let ok = MetaConfig::parse(
            Kind::WhatsApp,
            json!({"phone_number_id": "106540352242922", "access_token": "t", "app_secret": "s",
                   "verify_token": "v"}),
        )
        .unwrap();
        assert_eq!(ok.id, "106540352242922");
        assert_eq!(ok.api_base, "https://graph.facebook.com/v23.0");
        assert_eq!(
            paths(MetaConfig::parse(Kind::WhatsApp, json!({"page_id": "1"}))),
            vec![
                "phone_number_id",
                "page_id",
                "access_token",
                "app_secret",
                "verify_token"
            ]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let got = paths(MetaConfig::parse(
            Kind::Instagram,
            json!({"instagram_id": "17841400000000000", "access_token": "t", "app_secret": "",
                   "verify_token": "v", "api_base": "http://graph.example.org/v23.0",
                   "request_timeout_secs": 0}),
        ));
        assert_eq!(got, vec!["app_secret", "api_base", "request_timeout_secs"]);
        let got = paths(MetaConfig::parse(
            Kind::Messenger,
            json!({"page_id": "me", "access_token": "t", "app_secret": "s", "verify_token": "v",
                   "api_base": "http://127.0.0.1:9/v23.0", "colour": 1}),
        ));
        assert_eq!(got, vec!["colour"]);
        let got = paths(MetaConfig::parse(
            Kind::Messenger,
            json!({"page_id": "me", "access_token": "t", "app_secret": "s", "verify_token": "v",
                   "api_base": "http://127.0.0.1:9/v23.0"}),
        ));
        assert_eq!(got, vec!["page_id"]);
    }
}
