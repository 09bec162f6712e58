//! A Meta webhook body (already proved by its signature) read by each of the three kinds: bad
//! input must come back as a refusal, never a panic, and no event may be for another inbox.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_meta::inbound::{Item, Parser};
use passerelle_meta::kind::Kind;

fuzz_target!(|data: &[u8]| {
    for kind in [Kind::WhatsApp, Kind::Messenger, Kind::Instagram] {
        let parser = Parser {
            kind,
            id: "106540352242922",
            links: None,
        };
        if let Ok(batch) = parser.parse(data) {
            for item in batch.events {
                let event = match item {
                    Item::Event(e) | Item::Reaction(e) => e,
                };
                assert!(event.remote_id.is_some(), "every event can be deduplicated");
            }
        }
    }
});
