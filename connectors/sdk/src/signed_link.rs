//! Signed links through the daemon to files that only the connector can fetch (Meta's and
//! Telegram's media need the account's token; signal-cli keeps attachments on its own disk).
//!
//! A connector that has `media_public_url` offers such a file to other networks as
//! `{media_public_url}/accounts/{account}/media/{id}/{expires}/{signature}/{name}`, and serves that
//! path on its [`crate::HttpMount`]: the signature is an HMAC of the id and the expiry (seconds
//! since the epoch, [`LINK_LIFETIME`] after the link was made) under a key kept in the account's
//! data dir, so only files that were bridged can be fetched, only until the link expires, and the
//! link names no token.
//!
//! A file is answered as it comes from the network (streamed, never held whole), with
//! `X-Content-Type-Options: nosniff`, `Content-Security-Policy: sandbox`, and
//! `Content-Disposition: attachment` for anything but a raster image, so a browser never runs or
//! renders what another network's user sent as a page of the daemon's origin.

use crate::error::ConnectorError;
use crate::http::{Body, Request, Response, text_response};
use crate::webhook::{encode_hex, hub_signature};
use futures::future::BoxFuture;
use std::future::Future;
use std::path::Path;
use subtle::ConstantTimeEq;

/// How long a link made now stays valid: 30 days.
pub const LINK_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Makes and checks one account's links.
#[derive(Clone)]
pub struct SignedLinks {
    base: String,
    key: [u8; 32],
    lifetime: std::time::Duration,
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
            lifetime: LINK_LIFETIME,
        })
    }

    /// The same links, valid for `lifetime` once made.
    pub fn with_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.lifetime = lifetime;
        self
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

    fn signature(&self, id: &str, expires: u64) -> String {
        expiring_signature(&self.key, id, expires)
    }

    /// The link for the file `id` named `name`, valid for the lifetime from now; `None` when
    /// `id` has characters a path can't carry as they are.
    pub fn link(&self, id: &str, name: &str) -> Option<String> {
        if !plain(id) {
            return None;
        }
        let expires = now_secs() + self.lifetime.as_secs();
        Some(format!(
            "{}/{id}/{expires}/{}/{}",
            self.base,
            self.signature(id, expires),
            name_segment(name)
        ))
    }

    /// For a request path `/media/{id}/{expires}/{signature}/{name}`: `Some(Ok((id, name)))`
    /// when the signature is ours (compared in constant time) and the link has not expired,
    /// `Some(Err(why))` when not, `None` when the path is not a media path.
    pub fn check<'p>(&self, path: &'p str) -> Option<Result<(&'p str, &'p str), LinkRefusal>> {
        let path = path.split('?').next().unwrap_or(path);
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some("media"), Some(id), Some(expires), Some(sig), Some(name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return Some(Err(LinkRefusal::BadSignature));
        };
        let ok =
            plain(id) && bool::from(self.signature(id, expires).as_bytes().ct_eq(sig.as_bytes()));
        Some(if !ok {
            Err(LinkRefusal::BadSignature)
        } else if expires < now_secs() {
            Err(LinkRefusal::Expired)
        } else {
            Ok((id, name))
        })
    }
}

/// Why a media link is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Not signed by this daemon's key (or tampered with): 403.
    BadSignature,
    /// Signed, but past its expiry: 410.
    Expired,
}

/// The signature of a link to `id` valid until `expires` (seconds since the epoch): the first
/// 16 bytes of HMAC-SHA256(key, id NUL expires), hex.
pub fn expiring_signature(key: &[u8; 32], id: &str, expires: u64) -> String {
    let message = format!("{id}\0{expires}");
    encode_hex(&hub_signature(key, message.as_bytes())[..16])
}

/// Seconds since the epoch `lifetime` from now: when a link made now expires.
pub fn expiry_from_now(lifetime: std::time::Duration) -> u64 {
    now_secs() + lifetime.as_secs()
}

/// Whether a link that expires at `expires` has.
pub fn expired(expires: u64) -> bool {
    expires < now_secs()
}

/// A fetched file: its body (a stream, as the network sends it), MIME type and length when known.
pub struct File {
    /// The bytes.
    pub body: Body,
    /// Its MIME type, as the network says.
    pub mime: String,
    /// Its length, when the network said it.
    pub len: Option<u64>,
}

/// Whether a file of type `mime` may be shown inline: raster images only (SVG can carry script).
fn inline(mime: &str) -> bool {
    let mime = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        mime.as_str(),
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif" | "image/bmp"
    )
}

/// The answer for a file named `name` (a link's last segment): its bytes as they come, with
/// headers that keep a browser from running or rendering it as a page: `nosniff`, a sandboxing
/// CSP, and `attachment` for anything but a raster image.
pub fn file_response(file: File, name: &str) -> Response {
    let disposition = if inline(&file.mime) {
        "inline"
    } else {
        "attachment"
    };
    // The name segment holds only [A-Za-z0-9._-] and %XX: safe inside quotes.
    let mut b = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, file.mime.as_str())
        .header("x-content-type-options", "nosniff")
        .header("content-security-policy", "sandbox; default-src 'none'")
        .header(
            http::header::CONTENT_DISPOSITION,
            format!("{disposition}; filename=\"{}\"", name_segment(name)),
        )
        .header("referrer-policy", "no-referrer")
        .header(http::header::CACHE_CONTROL, "private, max-age=3600");
    if let Some(len) = file.len {
        b = b.header(http::header::CONTENT_LENGTH, len);
    }
    b.body(file.body)
        .unwrap_or_else(|_| text_response(500, "response\n"))
}

/// Serves a signed link: 404 when `links` is `None` or the path is not a media path, 403 for a
/// wrong signature, 410 for an expired link, 405 for anything but GET; otherwise `fetch(id)` gets
/// the file, answered by [`file_response`], or its failure with the status and text it gives.
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
    let (id, name) = match links.check(request.uri().path()) {
        None => return Box::pin(async { text_response(404, "no such endpoint\n") }),
        Some(Err(LinkRefusal::BadSignature)) => {
            return Box::pin(async { text_response(403, "bad signature\n") });
        }
        Some(Err(LinkRefusal::Expired)) => {
            return Box::pin(async { text_response(410, "this link has expired\n") });
        }
        Some(Ok((id, name))) => (id.to_owned(), name.to_owned()),
    };
    if request.method() != http::Method::GET {
        return Box::pin(async { text_response(405, "GET only\n") });
    }
    let fetched = fetch(id);
    Box::pin(async move {
        match fetched.await {
            Ok(file) => file_response(file, &name),
            Err((status, text)) => text_response(status, text),
        }
    })
}

/// Whether a request for a media path may be read: GET only, no body. For a handler's
/// [`crate::HttpHandler::admit`].
pub fn admit_media(head: &http::request::Parts) -> crate::http::Admission {
    if head.method == http::Method::GET {
        crate::http::Admission::read(0)
    } else {
        crate::http::Admission::Answer(text_response(405, "GET only\n"))
    }
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
        assert_eq!(
            links.check(path),
            Some(Ok(("1234567890", "photo_of_me.jpg")))
        );
        // The same key is read back; a tampered id, expiry or signature fails; other paths are
        // not ours.
        let again = SignedLinks::new("https://bridge.example.org", "wa", &dir).unwrap();
        assert_eq!(
            again.check(path),
            Some(Ok(("1234567890", "photo_of_me.jpg")))
        );
        let tampered = path.replace("1234567890", "1234567891");
        assert_eq!(links.check(&tampered), Some(Err(LinkRefusal::BadSignature)));
        let expires: u64 = path.split('/').nth(3).unwrap().parse().unwrap();
        let longer = path.replace(&expires.to_string(), &(expires + 86_400).to_string());
        assert_eq!(links.check(&longer), Some(Err(LinkRefusal::BadSignature)));
        assert_eq!(links.check("/hooks"), None);
        assert!(links.link("../etc/passwd", "x").is_none());
        let other = SignedLinks::new("https://x", "wa", &dir.join("other")).unwrap();
        assert_eq!(other.check(path), Some(Err(LinkRefusal::BadSignature)));
        // A link past its expiry is refused as expired, though its signature is good.
        let gone = now_secs() - 10;
        let old = format!(
            "/media/1234567890/{gone}/{}/a.pdf",
            links.signature("1234567890", gone)
        );
        assert_eq!(links.check(&old), Some(Err(LinkRefusal::Expired)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_is_never_served_as_a_page_and_only_raster_images_inline() {
        let answer = |mime: &str| {
            file_response(
                File {
                    body: Body::from("<script>alert(1)</script>"),
                    mime: mime.to_owned(),
                    len: Some(25),
                },
                "x.html",
            )
        };
        for (mime, disposition) in [
            ("text/html", "attachment"),
            ("image/svg+xml", "attachment"),
            ("application/pdf", "attachment"),
            ("image/png", "inline"),
            ("IMAGE/JPEG; q=1", "inline"),
        ] {
            let r = answer(mime);
            let h = |k: &str| {
                r.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
            };
            assert_eq!(h("x-content-type-options"), "nosniff");
            assert!(h("content-security-policy").starts_with("sandbox"));
            assert_eq!(
                h("content-disposition"),
                format!("{disposition}; filename=\"x.html\""),
                "{mime}"
            );
            assert_eq!(h("content-length"), "25");
        }
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
