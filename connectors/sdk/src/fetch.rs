//! Fetching a file another network links to, before uploading it to this one.
//!
//! Fetching a URL someone else chose is a way into the daemon's own network, so only `http(s)`
//! URLs whose every address is public are fetched (unless the account allows loopback and
//! private addresses, e.g. `media_fetch_private`), the connection is pinned to the address that
//! was checked, redirects are not followed, and the body is cut off past the size limit.

use crate::content::Attachment;
use crate::error::SendError;
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
    // A host that does not resolve is not coming back for this message: permanent.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| SendError::Rejected("attachment host not found".into()))?
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
}
