//! Signed links through the daemon to files that only the connector can fetch (Meta's and
//! Telegram's media need the account's token; signal-cli keeps attachments on its own disk).
//!
//! A connector that has `media_public_url` offers such a file to other networks as
//! `{media_public_url}/accounts/{account}/media/{id}/{signature}/{name}`, and serves that path on
//! its [`crate::HttpMount`]: the signature is an HMAC of the id under a key kept in the account's
//! data dir, so only files that were bridged can be fetched, and the link names no token.

use crate::error::ConnectorError;
use crate::http::{Request, Response, text_response};
use crate::webhook::{encode_hex, hub_signature};
use futures::future::BoxFuture;
use std::future::Future;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Makes and checks one account's links.
#[derive(Clone)]
pub struct SignedLinks {
    base: String,
    key: [u8; 32],
}

impl std::fmt::Debug for SignedLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedLinks")
    }
}

/// Reads a 32-byte key kept as hex in `path`, creating it (random, readable by its owner only)
/// when missing or unreadable.
pub fn load_key(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Some(key) = decode_key(text.trim())
    {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    opts.open(path)?.write_all(encode_hex(&key).as_bytes())?;
    Ok(key)
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, slot) in key.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// A file's name as the last segment of a link, for the people who see it: letters (any script),
/// digits and `.-_` are kept, anything else becomes `_`, at most 80 characters, `file` when
/// nothing is left; letters outside ASCII are percent-encoded.
pub fn name_segment(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().take(80) {
        if c.is_ascii_alphanumeric() || ".-_".contains(c) {
            out.push(c);
        } else if c.is_alphanumeric() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push_str("file");
    }
    out
}

/// Whether `id` may appear in a link path as it is (the ids networks give files are of these).
fn plain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 512
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:=".contains(&b))
}

impl SignedLinks {
    /// Links for `account` under `public_url`; the key lives in `data_dir/media.key`.
    pub fn new(public_url: &str, account: &str, data_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            base: format!(
                "{}/accounts/{account}/media",
                public_url.trim_end_matches('/')
            ),
            key: load_key(&data_dir.join("media.key"))?,
        })
    }

    /// Links for `account` when `public_url` (`media_public_url`) is set; a key that can't be
    /// read or made is a fatal error.
    pub fn for_account(
        public_url: Option<&str>,
        account: &str,
        data_dir: &Path,
    ) -> Result<Option<Self>, ConnectorError> {
        public_url
            .map(|url| {
                Self::new(url, account, data_dir).map_err(|e| {
                    ConnectorError::Fatal(format!("media link key in the data dir: {e}"))
                })
            })
            .transpose()
    }

    fn signature(&self, id: &str) -> String {
        encode_hex(&hub_signature(&self.key, id.as_bytes())[..16])
    }

    /// The link for the file `id` named `name`; `None` when `id` has characters a path can't
    /// carry as they are.
    pub fn link(&self, id: &str, name: &str) -> Option<String> {
        if !plain(id) {
            return None;
        }
        Some(format!(
            "{}/{id}/{}/{}",
            self.base,
            self.signature(id),
            name_segment(name)
        ))
    }

    /// For a request path `/media/{id}/{signature}/{name}`: `Some(Ok(id))` when the signature is
    /// ours (compared in constant time), `Some(Err(()))` when it is not, `None` when the path is not
    /// a media path.
    pub fn check<'p>(&self, path: &'p str) -> Option<Result<&'p str, ()>> {
        let path = path.split('?').next().unwrap_or(path);
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some("media"), Some(id), Some(sig), Some(_name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let ok = plain(id) && bool::from(self.signature(id).as_bytes().ct_eq(sig.as_bytes()));
        Some(if ok { Ok(id) } else { Err(()) })
    }
}

/// A fetched file: its bytes and MIME type.
pub type File = (Vec<u8>, String);

/// Serves a signed link: 404 when `links` is `None` or the path is not a media path, 403 for a
/// wrong signature, 405 for anything but GET; otherwise `fetch(id)` gets the file, whose failure
/// is answered with the status and text it gives.
pub fn serve<F, Fut>(
    links: Option<&SignedLinks>,
    request: &Request,
    fetch: F,
) -> BoxFuture<'static, Response>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<File, (u16, &'static str)>> + Send + 'static,
{
    let Some(links) = links else {
        return Box::pin(async { text_response(404, "no such endpoint\n") });
    };
    let id = match links.check(request.uri().path()) {
        None => return Box::pin(async { text_response(404, "no such endpoint\n") }),
        Some(Err(())) => return Box::pin(async { text_response(403, "bad signature\n") }),
        Some(Ok(id)) => id.to_owned(),
    };
    if request.method() != http::Method::GET {
        return Box::pin(async { text_response(405, "GET only\n") });
    }
    let fetched = fetch(id);
    Box::pin(async move {
        match fetched.await {
            Ok((data, mime)) => http::Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, mime)
                .body(bytes::Bytes::from(data))
                .unwrap_or_else(|_| text_response(500, "response\n")),
            Err((status, text)) => text_response(status, text),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_only_with_their_own_signature_and_key() {
        let dir = std::env::temp_dir().join(format!("pss-links-{}", std::process::id()));
        let links = SignedLinks::new("https://bridge.example.org/", "wa", &dir).unwrap();
        let link = links.link("1234567890", "photo of me.jpg").unwrap();
        let path = link
            .strip_prefix("https://bridge.example.org/accounts/wa")
            .unwrap();
        assert!(path.ends_with("/photo_of_me.jpg"));
        assert_eq!(links.check(path), Some(Ok("1234567890")));
        // The same key is read back; a tampered id or signature fails; other paths are not ours.
        let again = SignedLinks::new("https://bridge.example.org", "wa", &dir).unwrap();
        assert_eq!(again.check(path), Some(Ok("1234567890")));
        let tampered = path.replace("1234567890", "1234567891");
        assert_eq!(links.check(&tampered), Some(Err(())));
        assert_eq!(links.check("/hooks"), None);
        assert!(links.link("../etc/passwd", "x").is_none());
        let other = SignedLinks::new("https://x", "wa", &dir.join("other")).unwrap();
        assert_eq!(other.check(path), Some(Err(())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_keep_letters_of_any_script_and_nothing_that_leaves_the_segment() {
        assert_eq!(name_segment("photo of me.jpg"), "photo_of_me.jpg");
        assert_eq!(name_segment("été.png"), "%C3%A9t%C3%A9.png");
        assert_eq!(name_segment("../../x?y#z"), ".._.._x_y_z");
        assert_eq!(name_segment(""), "file");
        assert_eq!(name_segment(&"a".repeat(200)).len(), 80);
    }
}
