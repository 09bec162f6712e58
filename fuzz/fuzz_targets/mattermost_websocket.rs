//! A Mattermost WebSocket frame read into what the bridge carries: never a panic; the embedded
//! post JSON is bounded; a reaction names valid ids; a post's Markdown reads into the HTML subset
//! with safe links only, and bridged text written back mentions nobody.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_mattermost::config::valid_id;
use passerelle_mattermost::inbound::{self, Incoming};
use passerelle_mattermost::outbound;
use passerelle_sdk::{Formatted, html};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((_, Some(incoming))) = inbound::frame(text) else {
        return;
    };
    let post = match incoming {
        Incoming::Post(p) | Incoming::Edit(p) | Incoming::Delete(p) => p,
        Incoming::Reaction { post, user, .. } => {
            assert!(valid_id(&post) && valid_id(&user));
            return;
        }
        Incoming::Profile(_) => return,
    };
    let message = post.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let content = inbound::content_of(message, false);
    if let Some(Formatted::Html(h)) = &content.formatted {
        assert_eq!(html::sanitize(h.as_str()), h.as_str(), "outside the subset");
        for link in h.as_str().split("<a href=\"").skip(1) {
            let l = link.to_ascii_lowercase();
            assert!(
                l.starts_with("https://") || l.starts_with("http://") || l.starts_with("mailto:"),
                "unsafe link"
            );
        }
    }
    let out = outbound::markdown_of(&content);
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '@' {
            assert!(
                chars
                    .peek()
                    .is_none_or(|n| !(n.is_alphanumeric() || *n == '_')),
                "a mention survived"
            );
        }
    }
});
