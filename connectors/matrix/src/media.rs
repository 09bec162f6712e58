//! Files: fetching an attachment another network links to (before uploading it to the content
//! repository), and the signed links under which Matrix files are offered to other networks.
//!
//! Fetching a URL someone else chose is a way into the daemon's own network, so only `http(s)`
//! URLs whose every address is public are fetched (unless `media_fetch_private` allows loopback
//! and private addresses), the connection is pinned to the address that was checked, redirects
//! are not followed, and the body is cut off past the size limit.

use passerelle_sdk::{Attachment, SendError};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A fetched file.
#[derive(Debug)]
pub struct Fetched {
    /// The bytes.
    pub data: Vec<u8>,
    /// Its MIME type: the attachment's, else the server's, else `application/octet-stream`.
    pub mime: String,
}

/// Whether an address is one a stranger's link must not reach.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// The `m.room.message` msgtype for a MIME type.
pub fn msgtype(mime: &str) -> &'static str {
    if mime.starts_with("image/") {
        "m.image"
    } else if mime.starts_with("video/") {
        "m.video"
    } else if mime.starts_with("audio/") {
        "m.audio"
    } else {
        "m.file"
    }
}

/// Fetches an attachment's file, at most `max` bytes.
pub async fn fetch(att: &Attachment, max: u64, allow_private: bool) -> Result<Fetched, SendError> {
    let url = reqwest::Url::parse(att.url.as_str())
        .map_err(|_| SendError::Rejected("attachment URL is not a URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SendError::Rejected("attachment URL is not http(s)".into()));
    }
    if att.size.is_some_and(|s| s > max) {
        return Err(SendError::TooLarge);
    }
    let host = url
        .host_str()
        .ok_or_else(|| SendError::Rejected("attachment URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| SendError::Disconnected)?
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(SendError::Rejected("attachment host has no address".into()));
    };
    if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
        return Err(SendError::Rejected(
            "attachment URL points to a private address".into(),
        ));
    }
    // Pinned to the address just checked, so a second lookup can't lead elsewhere.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .resolve(&host, first)
        .build()
        .map_err(|_| SendError::Rejected("http client".into()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|_| SendError::Disconnected)?;
    let status = resp.status().as_u16();
    if status >= 500 || status == 429 {
        return Err(SendError::Disconnected);
    }
    if !(200..300).contains(&status) {
        return Err(SendError::Rejected(format!(
            "attachment fetch: status {status}"
        )));
    }
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(SendError::TooLarge);
    }
    let server_mime = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let mut data = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| SendError::Disconnected)? {
        if (data.len() + chunk.len()) as u64 > max {
            return Err(SendError::TooLarge);
        }
        data.extend_from_slice(&chunk);
    }
    let mime = att
        .mime
        .clone()
        .or(server_mime)
        .filter(|m| m.contains('/'))
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok(Fetched { data, mime })
}

/// How Matrix files are offered to other networks.
///
/// Without `media_public_url` the link is the homeserver's authenticated download URL (it needs a
/// Matrix access token). With it, the link is the daemon's own
/// `{media_public_url}/accounts/{account}/media/{server}/{id}/{signature}/{name}`: the signature is
/// an HMAC of the file's id under a key kept in the account's data dir, so only files that were
/// bridged can be fetched through it, and the daemon fetches them with the bot's token.
#[derive(Clone)]
pub struct MediaLinks {
    homeserver: String,
    public: Option<(String, [u8; 32])>,
}

impl std::fmt::Debug for MediaLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaLinks")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads the link key from `path`, creating it (owner-readable only) when missing.
fn load_key(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Some(bytes) = unhex(text.trim())
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
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
    opts.open(path)?.write_all(hex(&key).as_bytes())?;
    Ok(key)
}

impl MediaLinks {
    /// Links for `account`; `public` is `media_public_url`, the key lives in `data_dir`.
    pub fn new(
        homeserver: &str,
        public: Option<&str>,
        account: &str,
        data_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let public = match public {
            Some(base) => Some((
                format!("{}/accounts/{account}", base.trim_end_matches('/')),
                load_key(&data_dir.join("media.key"))?,
            )),
            None => None,
        };
        Ok(Self {
            homeserver: homeserver.to_owned(),
            public,
        })
    }

    fn signature(key: &[u8; 32], server: &str, id: &str) -> String {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
            .expect("HMAC takes keys of any length");
        mac.update(server.as_bytes());
        mac.update(b"/");
        mac.update(id.as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// Whether `signature` is this daemon's for the file (compared in constant time).
    pub fn verify(&self, server: &str, id: &str, signature: &str) -> bool {
        use subtle::ConstantTimeEq;
        match &self.public {
            Some((_, key)) => Self::signature(key, server, id)
                .as_bytes()
                .ct_eq(signature.as_bytes())
                .into(),
            None => false,
        }
    }

    /// The link for an `mxc://server/id` file named `name`.
    pub fn link(&self, mxc: &str, name: &str) -> Option<String> {
        let rest = mxc.strip_prefix("mxc://")?;
        let (server, id) = rest.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b))
        };
        if !ok(server) || !ok(id) {
            return None;
        }
        Some(match &self.public {
            Some((base, key)) => {
                let mut safe: String = name
                    .chars()
                    .map(|c| {
                        if c.is_alphanumeric() || ".-_".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(80)
                    .collect();
                if safe.is_empty() {
                    safe.push_str("file");
                }
                format!(
                    "{base}/media/{server}/{id}/{}/{}",
                    Self::signature(key, server, id),
                    crate::appservice::enc(&safe)
                )
            }
            None => format!(
                "{}/_matrix/client/v1/media/download/{server}/{id}",
                self.homeserver
            ),
        })
    }

    /// Whether links go through the daemon (then its media endpoint must be served).
    pub fn public(&self) -> bool {
        self.public.is_some()
    }
}

/// Serves `GET /media/{server}/{id}/{signature}/{name}`: checks the signature, fetches the file
/// from the homeserver's authenticated media with `token` (and `as_user` for an appservice), and
/// answers it. `None` when the path is not a media path.
pub async fn serve(
    links: &MediaLinks,
    path: &str,
    homeserver: &str,
    token: &str,
    as_user: Option<&str>,
    max: u64,
) -> Option<passerelle_sdk::http::Response> {
    use passerelle_sdk::http::json_response;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["media", server, id, signature, _name] = parts.as_slice() else {
        return None;
    };
    if !links.verify(server, id, signature) {
        return Some(json_response(
            403,
            &serde_json::json!({"error": "bad signature"}),
        ));
    }
    let mut url = format!("{homeserver}/_matrix/client/v1/media/download/{server}/{id}");
    if let Some(user) = as_user {
        url.push_str(&format!("?user_id={}", crate::appservice::enc(user)));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .ok()?;
    let fail = |status: u16| json_response(status, &serde_json::json!({"error": "unavailable"}));
    let Ok(mut resp) = client.get(url).bearer_auth(token).send().await else {
        return Some(fail(502));
    };
    if !resp.status().is_success() {
        let status = if resp.status().as_u16() == 404 {
            404
        } else {
            502
        };
        return Some(fail(status));
    }
    let mime = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut data = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if (data.len() + chunk.len()) as u64 > max {
                    return Some(fail(413));
                }
                data.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => return Some(fail(502)),
        }
    }
    Some(
        http::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, mime)
            .header("x-content-type-options", "nosniff")
            .header("content-security-policy", "sandbox")
            .body(bytes::Bytes::from(data))
            .unwrap_or_else(|_| http::Response::new(bytes::Bytes::new())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_links_are_refused_unless_allowed() {
        let att = Attachment {
            name: "x".into(),
            mime: None,
            size: None,
            url: "http://127.0.0.1:9/x".into(),
        };
        assert!(matches!(
            fetch(&att, 10, false).await,
            Err(SendError::Rejected(_))
        ));
        let att = Attachment {
            url: "file:///etc/passwd".into(),
            ..att
        };
        assert!(matches!(
            fetch(&att, 10, true).await,
            Err(SendError::Rejected(_))
        ));
        let att = Attachment {
            url: "https://example.org/big".into(),
            size: Some(11),
            ..att
        };
        assert_eq!(
            fetch(&att, 10, true).await.unwrap_err(),
            SendError::TooLarge
        );
    }

    #[test]
    fn public_links_are_signed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let links =
            MediaLinks::new("https://hs", Some("https://bridge/"), "mx", dir.path()).unwrap();
        let link = links
            .link("mxc://hs.example/abcDEF", "cat photo.png")
            .unwrap();
        let prefix = "https://bridge/accounts/mx/media/hs.example/abcDEF/";
        assert!(link.starts_with(prefix), "{link}");
        assert!(link.ends_with("/cat_photo.png"), "{link}");
        let sig = link[prefix.len()..].split('/').next().unwrap();
        assert!(links.verify("hs.example", "abcDEF", sig));
        assert!(!links.verify("hs.example", "other", sig));
        assert!(!links.verify("hs.example", "abcDEF", "00"));
        // The key is kept: a restart signs the same way.
        let again =
            MediaLinks::new("https://hs", Some("https://bridge"), "mx", dir.path()).unwrap();
        assert!(again.verify("hs.example", "abcDEF", sig));
        assert_eq!(links.link("mxc://hs/../../x", "n"), None);
        let private = MediaLinks::new("https://hs", None, "mx", dir.path()).unwrap();
        assert_eq!(
            private.link("mxc://hs/abc", "n").unwrap(),
            "https://hs/_matrix/client/v1/media/download/hs/abc"
        );
    }

    #[test]
    fn msgtypes_follow_the_mime_type() {
        assert_eq!(msgtype("image/png"), "m.image");
        assert_eq!(msgtype("audio/ogg"), "m.audio");
        assert_eq!(msgtype("application/pdf"), "m.file");
    }
}
