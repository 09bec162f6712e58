//! A Discord Gateway frame read into events: never a panic, every message event carries an id
//! the daemon can deduplicate on, and nothing goes to a room the account does not serve.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_discord::directory::Directory;
use passerelle_discord::inbound;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((t, d)) = inbound::frame(text) else {
        return;
    };
    let rooms = ["100".into(), "@7".into()];
    let dir = Directory::new(&rooms);
    dir.set_me(1, 2);
    dir.learn_channel(&serde_json::json!({"id": "300", "type": 11, "parent_id": "100"}));
    // Twice: the first may teach the directory channels the second uses.
    for _ in 0..2 {
        for event in inbound::dispatch(&t, &d, &dir).events {
            assert!(
                rooms.contains(&event.room),
                "an event for a room not served"
            );
            if matches!(event.kind, passerelle_sdk::EventKind::Message(_)) {
                assert!(
                    event.remote_id.is_some(),
                    "every message can be deduplicated"
                );
            }
        }
    }
});
