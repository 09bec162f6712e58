//! Files: the signed links under which Matrix files are offered to other networks, and the
//! msgtype of a file sent to Matrix. Attachments from other networks are fetched with the SDK's
//! `fetch` (public addresses only unless `media_fetch_private`, pinned, size-capped).

use std::time::Duration;

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

/// How Matrix files are offered to other networks.
///
/// Without `media_public_url` the link is the homeserver's authenticated download URL (it needs a
/// Matrix access token). With it, the link is the daemon's own
/// `{media_public_url}/accounts/{account}/media/{server}/{id}/{expires}/{signature}/{name}`: the
/// signature is an HMAC of the file's id and the link's expiry (30 days after it was made, the
/// SDK's `LINK_LIFETIME`) under a key kept in the account's data dir, so only files that were
/// bridged can be fetched through it, only until then, and the daemon fetches them with the bot's
/// token and passes them on as they come (`signed_link::file_response`: never shown as a page).
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
                passerelle_sdk::signed_link::load_key(&data_dir.join("media.key"))?,
            )),
            None => None,
        };
        Ok(Self {
            homeserver: homeserver.to_owned(),
            public,
        })
    }

    fn signature(key: &[u8; 32], server: &str, id: &str, expires: u64) -> String {
        passerelle_sdk::signed_link::expiring_signature(key, &format!("{server}/{id}"), expires)
    }

    /// Whether `signature` is this daemon's for the file until `expires` (compared in constant
    /// time); expiry is checked apart.
    pub fn verify(&self, server: &str, id: &str, expires: u64, signature: &str) -> bool {
        use subtle::ConstantTimeEq;
        match &self.public {
            Some((_, key)) => Self::signature(key, server, id, expires)
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
                let expires = passerelle_sdk::signed_link::expiry_from_now(
                    passerelle_sdk::signed_link::LINK_LIFETIME,
                );
                format!(
                    "{base}/media/{server}/{id}/{expires}/{}/{}",
                    Self::signature(key, server, id, expires),
                    passerelle_sdk::signed_link::name_segment(name)
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

/// What a request for the media endpoint may send: a GET without a body.
pub fn admit(head: &http::request::Parts) -> passerelle_sdk::Admission {
    passerelle_sdk::signed_link::admit_media(head)
}

/// Serves `GET /media/{server}/{id}/{expires}/{signature}/{name}`: checks the signature and the
/// expiry, fetches the file from the homeserver's authenticated media with `token` (and
/// `as_user` for an appservice), and passes it on as it comes. `None` when the path is not a
/// media path.
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
    let ["media", server, id, expires, signature, name] = parts.as_slice() else {
        return None;
    };
    let expires = expires.parse::<u64>().unwrap_or(0);
    if !links.verify(server, id, expires, signature) {
        return Some(json_response(
            403,
            &serde_json::json!({"error": "bad signature"}),
        ));
    }
    if passerelle_sdk::signed_link::expired(expires) {
        return Some(json_response(
            410,
            &serde_json::json!({"error": "this link has expired"}),
        ));
    }
    let mut url = format!("{homeserver}/_matrix/client/v1/media/download/{server}/{id}");
    if let Some(user) = as_user {
        url.push_str(&format!("?user_id={}", crate::appservice::enc(user)));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .ok()?;
    let fail = |status: u16| json_response(status, &serde_json::json!({"error": "unavailable"}));
    let Ok(resp) = client.get(url).bearer_auth(token).send().await else {
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
    let len = resp.content_length();
    if len.is_some_and(|n| n > max) {
        return Some(fail(413));
    }
    let mime = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let chunks = futures::StreamExt::map(resp.bytes_stream(), |c| c.map_err(std::io::Error::other));
    Some(passerelle_sdk::signed_link::file_response(
        passerelle_sdk::signed_link::File {
            body: passerelle_sdk::http::Body::capped(chunks, max),
            mime,
            len,
        },
        name,
    ))
}

/// The text sent for a file that could not be fetched: its name and link.
pub fn link_text(att: &passerelle_sdk::Attachment) -> String {
    format!("{}: {}", att.name.as_str(), att.url.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut rest = link[prefix.len()..].split('/');
        let expires: u64 = rest.next().unwrap().parse().unwrap();
        let sig = rest.next().unwrap();
        assert!(links.verify("hs.example", "abcDEF", expires, sig));
        assert!(!links.verify("hs.example", "other", expires, sig));
        assert!(
            !links.verify("hs.example", "abcDEF", expires + 1, sig),
            "a longer life"
        );
        assert!(!links.verify("hs.example", "abcDEF", expires, "00"));
        // The key is kept: a restart signs the same way.
        let again =
            MediaLinks::new("https://hs", Some("https://bridge"), "mx", dir.path()).unwrap();
        assert!(again.verify("hs.example", "abcDEF", expires, sig));
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
