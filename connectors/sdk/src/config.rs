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
