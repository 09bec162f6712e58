//! Parsing a connector's typed config table, with errors that name the key path.

use crate::error::ConfigIssue;
use serde::de::DeserializeOwned;

/// Checks a service's base URL from config: `https`, or plain `http` only to a loopback host
/// (tests, a local proxy), so tokens never cross a network in clear. The error says why.
pub fn check_base_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "not a URL (expected https://host/...)".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    match scheme {
        "https" => Ok(()),
        "http" => {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("must be https (http only to a loopback address)".into())
            }
        }
        _ => Err("must be an https URL".into()),
    }
}

/// Checks `media_public_url` (where people on other networks reach the daemon's listener):
/// an http(s) URL, returned without its trailing `/`; an issue naming the key otherwise.
pub fn public_url(value: Option<&str>, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    let url = value?.trim_end_matches('/');
    if url.starts_with("https://") || url.starts_with("http://") {
        Some(url.to_owned())
    } else {
        issues.push(ConfigIssue::new(
            "media_public_url",
            "not an http(s) URL (e.g. https://bridge.example.org)",
        ));
        None
    }
}

/// The file keys of every connector that carries files, checked: `media_public_url` (where
/// people on other networks reach the daemon's listener, for signed links to files only the
/// connector can fetch), `max_upload_bytes` (the largest file sent to or offered from the
/// network) and `media_fetch_private` (fetch files from loopback and private addresses too).
/// Each connector keeps the three keys in its own table, with its own defaults, and resolves them
/// here, so they mean the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `media_public_url`, without its trailing `/`.
    pub public_url: Option<String>,
    /// `max_upload_bytes`.
    pub max_upload_bytes: u64,
    /// `media_fetch_private`.
    pub fetch_private: bool,
}

impl Media {
    /// Checks the three keys; a bad `media_public_url` is an issue at that key.
    pub fn check(
        public_url: Option<&str>,
        max_upload_bytes: u64,
        fetch_private: bool,
        issues: &mut Vec<ConfigIssue>,
    ) -> Self {
        Self {
            public_url: self::public_url(public_url, issues),
            max_upload_bytes,
            fetch_private,
        }
    }
}

/// A timeout key in whole seconds (`request_timeout_secs`, `connect_timeout_secs`…): at least 1,
/// else an issue at `key`.
pub fn timeout(key: &str, secs: u64, issues: &mut Vec<ConfigIssue>) -> std::time::Duration {
    if secs == 0 {
        issues.push(ConfigIssue::new(key, "must be at least 1"));
    }
    std::time::Duration::from_secs(secs)
}

/// Formats one key for a path: bare when it is a plain word, quoted when it holds a dot or space.
pub fn path_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Deserializes `table` into `T`. On failure, the issue's path names the offending key relative to
/// the table (`server`, `channels[2]`), and serde's "missing field" and "unknown field" messages are
/// turned into the path of that field with the message `missing` or `unknown key`.
pub fn parse_table<T: DeserializeOwned>(table: serde_json::Value) -> Result<T, ConfigIssue> {
    serde_path_to_error::deserialize::<_, T>(table).map_err(|err| {
        let mut path = String::new();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&path_key(key));
                }
                serde_path_to_error::Segment::Enum { variant } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&path_key(variant));
                }
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let inner = err.into_inner().to_string();
        let (field, message) = if let Some(name) = field_in(&inner, "missing field `") {
            (Some(name), "missing".to_owned())
        } else if let Some(name) = field_in(&inner, "unknown field `") {
            let expected = inner
                .split_once(", expected ")
                .map(|(_, rest)| format!(" (expected {rest})"))
                .unwrap_or_default();
            (Some(name), format!("unknown key{expected}"))
        } else {
            (None, inner)
        };
        // serde_path_to_error already ends the path with an unknown key's name, not a missing one's.
        if let Some(field) = field.filter(|f| !path.ends_with(&path_key(f))) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&path_key(&field));
        }
        ConfigIssue::new(path, message)
    })
}

fn field_in(message: &str, marker: &str) -> Option<String> {
    let start = message.find(marker)? + marker.len();
    let rest = &message[start..];
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_keys_and_timeouts_are_checked_at_their_keys() {
        let mut issues = Vec::new();
        let media = Media::check(Some("https://bridge.example.org/"), 10, true, &mut issues);
        assert_eq!(
            media.public_url.as_deref(),
            Some("https://bridge.example.org")
        );
        assert_eq!((media.max_upload_bytes, media.fetch_private), (10, true));
        assert_eq!(
            timeout("request_timeout_secs", 30, &mut issues).as_secs(),
            30
        );
        assert!(issues.is_empty());
        Media::check(Some("bridge.example.org"), 10, false, &mut issues);
        timeout("request_timeout_secs", 0, &mut issues);
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["media_public_url", "request_timeout_secs"]);
    }

    #[test]
    fn a_public_url_is_http_and_loses_its_trailing_slash() {
        let mut issues = Vec::new();
        assert_eq!(
            public_url(Some("https://bridge.example.org/"), &mut issues),
            Some("https://bridge.example.org".into())
        );
        assert_eq!(public_url(None, &mut issues), None);
        assert!(issues.is_empty());
        assert_eq!(public_url(Some("bridge.example.org"), &mut issues), None);
        assert_eq!(issues[0].path, "media_public_url");
    }

    #[test]
    fn base_urls_are_https_or_loopback_http() {
        for ok in [
            "https://graph.facebook.com/v23.0",
            "http://127.0.0.1:8080/v23.0",
            "http://[::1]:9/x",
            "http://localhost",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://graph.facebook.com",
            "http://10.0.0.1/",
            "ftp://x",
            "graph.facebook.com",
            "https://",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        server: String,
        port: Option<u16>,
        #[serde(default)]
        channels: Vec<Chan>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Chan {
        name: String,
    }

    #[test]
    fn missing_unknown_and_wrong_type_name_their_path() {
        let e = parse_table::<Sample>(serde_json::json!({})).unwrap_err();
        assert_eq!(e.to_string(), "server: missing");
        let e = parse_table::<Sample>(serde_json::json!({"server": "x", "sever": 1})).unwrap_err();
        assert!(e.to_string().starts_with("sever: unknown key"), "{e}");
        let e =
            parse_table::<Sample>(serde_json::json!({"server": "x", "port": "many"})).unwrap_err();
        assert!(e.to_string().starts_with("port: invalid type"), "{e}");
        let e = parse_table::<Sample>(
            serde_json::json!({"server": "x", "channels": [{"name": "a"}, {}]}),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "channels[1].name: missing");
    }

    #[test]
    fn keys_with_dots_are_quoted() {
        assert_eq!(path_key("irc.main"), "\"irc.main\"");
        assert_eq!(path_key("server"), "server");
    }
}
