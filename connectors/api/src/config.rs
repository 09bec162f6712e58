//! The API account's config: `[accounts.NAME]` with `kind = "api"`.

use passerelle_sdk::config::parse_table;
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The keys of an API account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on, e.g. `127.0.0.1:4242`.
    pub listen: String,
    /// The bearer token clients must send. Required (or `token_file`).
    pub token: Option<Secret>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// How many messages `GET /api/messages` keeps for a client that has not read them (oldest
    /// forgotten first). Default 1000.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// The largest request body accepted, in bytes. Default 65536.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_buffer() -> usize {
    1000
}

fn default_max_body() -> usize {
    64 * 1024
}

/// The config with its secret read and its address parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// The token.
    pub token: Secret,
    /// Messages kept for `GET /api/messages`.
    pub buffer: usize,
    /// Largest body.
    pub max_body_bytes: usize,
}

impl ApiConfig {
    /// Parses and checks an account table, reporting every issue.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: ApiConfig = parse_table(table).map_err(|i| vec![i])?;
        let mut issues = Vec::new();
        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            issues.push(ConfigIssue::new(
                "listen",
                "not a socket address (e.g. 127.0.0.1:4242)",
            ))
        });
        let token = secret::require("token", raw.token.as_ref(), raw.token_file.as_ref())
            .and_then(|t| {
                if t.expose().len() < 16 {
                    Err(ConfigIssue::new(
                        "token",
                        "too short: use at least 16 characters",
                    ))
                } else {
                    Ok(t)
                }
            })
            .map_err(|i| issues.push(i));
        if raw.buffer == 0 {
            issues.push(ConfigIssue::new("buffer", "must be at least 1"));
        }
        match (listen, token) {
            (Ok(listen), Ok(token)) if issues.is_empty() => Ok(Settings {
                listen,
                token,
                buffer: raw.buffer,
                max_body_bytes: raw.max_body_bytes,
            }),
            _ => Err(issues),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn issues_name_their_keys() {
        let err = ApiConfig::parse(json!({"listen": "x", "buffer": 0})).unwrap_err();
        let all: Vec<String> = err.iter().map(|i| i.to_string()).collect();
        assert!(
            all.iter()
                .any(|s| s.starts_with("listen: not a socket address")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|s| s.starts_with("token: missing")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|s| s.starts_with("buffer: must be")),
            "{all:?}"
        );
        let err =
            ApiConfig::parse(json!({"listen": "127.0.0.1:1", "token_file": "/nonexistent/t"}))
                .unwrap_err();
        assert_eq!(err[0].path, "token_file");
        let err = ApiConfig::parse(json!({"listen": "127.0.0.1:1", "tokn": "x"})).unwrap_err();
        assert_eq!(err[0].path, "tokn");
        let ok = ApiConfig::parse(json!({"listen": "127.0.0.1:1", "token": "0123456789abcdef"}))
            .unwrap();
        assert_eq!(ok.buffer, 1000);
    }
}
