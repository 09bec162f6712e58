//! A Telegram update (from getUpdates or a webhook) read into events: never a panic, and every
//! event carries an id the daemon can deduplicate on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_telegram::inbound::Reader;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let room_of = |chat: i64| chat.to_string();
    let reader = Reader {
        bot_id: 7_000_000_001,
        room_of: &room_of,
        links: None,
        max_bytes: 1 << 20,
    };
    for event in reader.read(&update).events {
        assert!(event.remote_id.is_some(), "every event can be deduplicated");
    }
});
