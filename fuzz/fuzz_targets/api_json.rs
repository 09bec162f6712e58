//! A body posted to the HTTP message API: decoded as the server does, then turned into an event.
//! Bad input must come back as an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_api::message::ApiMessage;
use passerelle_sdk::RoomId;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = serde_json::from_slice::<ApiMessage>(data) else {
        return;
    };
    let rooms = [RoomId::new("lobby"), RoomId::new("")];
    if let Ok((event, answer)) = msg.into_event(&rooms) {
        assert_eq!(event.room.as_str(), answer.gateway);
    }
});
