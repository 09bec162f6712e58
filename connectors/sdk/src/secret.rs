//! Secrets: values that never print, compared in constant time, read from config, the environment
//! or a file (`password_file = "/run/secrets/irc"` beside every `password`).

use crate::error::ConfigIssue;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// A secret string (password, token). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Compares with `other` in time that does not depend on where they differ.
    pub fn matches(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Environment overrides are parsed for numbers and booleans, so a numeric password arrives
        // as a number: take it back as the text it was.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
            Bool(bool),
        }
        Ok(Secret(match Raw::deserialize(deserializer)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Bool(b) => b.to_string(),
        }))
    }
}

/// Reads a secret from a file: the whole file, less one trailing newline.
pub fn read_secret_file(path: &Path) -> std::io::Result<Secret> {
    let mut value = std::fs::read_to_string(path)?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(Secret(value))
}

/// One `name secret` line of a file read by [`read_pairs_file`].
#[derive(Clone, Debug)]
pub struct Pair {
    /// The line's number, from 1.
    pub line: usize,
    /// The first word.
    pub name: String,
    /// The rest of the line, trimmed.
    pub secret: Secret,
}

/// Reads a file of `name secret` lines (channel keys, room passwords) for the config key `key`
/// (e.g. `channel_keys_file`); blank lines are skipped. An unreadable file, and each line that
/// is not `shape` (e.g. `"#channel key"`), is an issue under `key` naming the line, never its
/// secret.
pub fn read_pairs_file(
    key: &str,
    path: &Path,
    shape: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<Pair> {
    let text = match read_secret_file(path) {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue::new(
                key,
                format!("cannot read {}: {e}", path.display()),
            ));
            return Vec::new();
        }
    };
    let mut pairs = Vec::new();
    for (n, line) in text.expose().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once(char::is_whitespace) {
            Some((name, secret)) if !secret.trim().is_empty() => pairs.push(Pair {
                line: n + 1,
                name: name.to_owned(),
                secret: Secret::new(secret.trim()),
            }),
            _ => issues.push(ConfigIssue::new(
                key,
                format!("line {}: expected \"{shape}\"", n + 1),
            )),
        }
    }
    pairs
}

/// Resolves the pair `key` / `key_file`: at most one may be set; the file must be readable.
/// Returns `Ok(None)` when neither is set. Issues name `key` or `key_file`.
pub fn resolve(
    key: &str,
    value: Option<&Secret>,
    file: Option<&PathBuf>,
) -> Result<Option<Secret>, ConfigIssue> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigIssue::new(
            key,
            format!("set either {key} or {key}_file, not both"),
        )),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => read_secret_file(path).map(Some).map_err(|e| {
            ConfigIssue::new(
                format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        }),
        (None, None) => Ok(None),
    }
}

/// Like [`resolve`], but one of the two must be set.
pub fn require(
    key: &str,
    value: Option<&Secret>,
    file: Option<&PathBuf>,
) -> Result<Secret, ConfigIssue> {
    resolve(key, value, file)?
        .ok_or_else(|| ConfigIssue::new(key, format!("missing (set {key} or {key}_file)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_compare() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter"));
    }

    #[test]
    fn file_variant_is_read_and_missing_file_names_the_key() {
        let dir = std::env::temp_dir().join(format!("pss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let got = resolve("token", None, Some(&path)).unwrap().unwrap();
        assert_eq!(got.expose(), "abc");
        let missing = dir.join("nope");
        let err = resolve("token", None, Some(&missing)).unwrap_err();
        assert_eq!(err.path, "token_file");
        let err = require("token", None, None).unwrap_err();
        assert_eq!(err.path, "token");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
