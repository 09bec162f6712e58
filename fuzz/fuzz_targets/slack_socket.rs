//! A Slack Socket Mode frame read into what the bridge carries: never a panic; an events
//! envelope always has the id to acknowledge; a classified event names a valid conversation
//! and, for messages, a text whose mentions resolve and whose formatting reads into the HTML
//! subset with safe links only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_sdk::{Formatted, html};
use passerelle_slack::inbound::{self, Incoming};
use passerelle_slack::socket::{Frame, parse_frame};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(frame) = parse_frame(text) else {
        return;
    };
    let Frame::Events {
        envelope_id,
        payload,
    } = frame
    else {
        return;
    };
    assert!(!envelope_id.is_empty(), "an envelope without its id");
    let Some(incoming) = inbound::classify(&payload) else {
        return;
    };
    let message = match &incoming {
        Incoming::Message {
            conversation,
            message,
        }
        | Incoming::Edit {
            conversation,
            message,
        } => {
            assert!(inbound::valid_id(conversation));
            message
        }
        Incoming::Reaction {
            conversation, ts, ..
        }
        | Incoming::Delete {
            conversation, ts, ..
        } => {
            assert!(inbound::valid_id(conversation) && inbound::valid_ts(ts));
            return;
        }
        _ => return,
    };
    let raw = message.get("text").and_then(|t| t.as_str()).unwrap_or("");
    let people: HashMap<String, String> = inbound::mentioned_users(raw)
        .into_iter()
        .map(|u| (u, "A <b>name</b> & more".to_owned()))
        .collect();
    let resolved = inbound::resolve_mentions(raw, &people, &|c| Some(format!("chan-{c}")));
    let content = inbound::content_of(&resolved, false);
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
});
