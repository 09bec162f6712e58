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

/// Whether an address is one a stranger's link must not reach: anything but global unicast.
/// Checked as an allow-list, so a range that reaches private space by translation (NAT64
/// `64:ff9b::/96` to `169.254.169.254`, 6to4 `2002::/16`, the old IPv4-compatible `::/96`, site
/// local `fec0::/10`) is refused with the rest.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            a == 0                                  // "this network"
                || a == 10
                || (a == 100 && (b & 0xc0) == 64)   // 100.64/10, shared address space
                || a == 127
                || (a == 169 && b == 254)           // link local (cloud metadata)
                || (a == 172 && (b & 0xf0) == 16)
                || (a == 192 && b == 0 && c == 0)   // IETF protocol assignments
                || (a == 192 && b == 0 && c == 2)   // documentation
                || (a == 192 && b == 88 && c == 99) // 6to4 relays
                || (a == 192 && b == 168)
                || (a == 198 && (b & 0xfe) == 18)   // 198.18/15, benchmarking
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || a >= 224 // multicast, 240/4 reserved, broadcast
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let global_unicast = (s[0] & 0xe000) == 0x2000; // 2000::/3
            !global_unicast
                || (s[0] == 0x2001 && s[1] < 0x0200)   // 2001::/23 (Teredo, ORCHID, ...)
                || (s[0] == 0x2001 && s[1] == 0x0db8)  // documentation
                || s[0] == 0x2002                      // 6to4: any IPv4 inside
                || (s[0] & 0xfff0) == 0x3ff0 // 3fff::/20, documentation
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
    // No proxy: an HTTPS_PROXY in the environment would connect where the proxy likes, undoing
    // the pinning to the address just checked.
    let client = reqwest::Client::builder()
        .no_proxy()
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
            // Ranges that reach private space by translation, and other non-global ones.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::1",
            "::7f00:1",
            "::a9fe:a9fe",
            "fec0::1",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "ff02::1",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "198.20.0.1",
            "2a00:1450:4001:80b::200e",
            "::ffff:93.184.216.34",
        ] {
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
