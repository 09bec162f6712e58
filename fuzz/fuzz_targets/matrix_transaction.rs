//! A Matrix application-service transaction body (the homeserver's webhook), decoded as the
//! appservice endpoint does, each event translated; and each event's formatted body through the
//! HTML sanitizer. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_matrix::{media::MediaLinks, translate};
use passerelle_sdk::RoomId;
use passerelle_sdk::html;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(links) = MediaLinks::new(
        "http://127.0.0.1:1",
        None,
        "m",
        std::path::Path::new("/nonexistent"),
    ) else {
        return;
    };
    let room = RoomId::new("!room:example.org");
    for ev in parsed["events"].as_array().into_iter().flatten() {
        let _ = translate::inbound(ev, &room, None, &links);
        if let Some(body) = ev["content"]["formatted_body"].as_str() {
            let clean = html::sanitize(body);
            assert!(
                !clean.contains("<script"),
                "a script survived the sanitizer"
            );
        }
    }
});
