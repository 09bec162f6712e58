//! Bytes of signal-cli's event stream, cut anywhere: parsed as server-sent events, each `receive`
//! read into events. Never a panic; every event carries an id the daemon can deduplicate on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_sdk::RoomId;
use passerelle_signal::inbound::Reader;
use passerelle_signal::rpc::SseParser;

fuzz_target!(|data: &[u8]| {
    let rooms = [RoomId::new("+15551112222")];
    let reader = Reader {
        account: "+15550000000",
        self_uuid: None,
        rooms: &rooms,
        links: None,
        max_bytes: 1 << 20,
    };
    let mut parser = SseParser::default();
    let cut = data
        .first()
        .map(|b| *b as usize % (data.len() + 1))
        .unwrap_or(0);
    for piece in [&data[..cut], &data[cut..]] {
        let Ok(events) = parser.feed(piece) else {
            return;
        };
        for e in events {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) {
                for event in reader.read(&v).events {
                    assert!(event.remote_id.is_some(), "every event can be deduplicated");
                }
            }
        }
    }
});
