//! One line from an IRC server, as bytes off the wire: decoded (invalid UTF-8 included), parsed,
//! its text converted from IRC formatting and split again for sending. Nothing may panic, and what
//! the parser accepts must survive being built and parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_irc::{format, line, split};

fuzz_target!(|data: &[u8]| {
    let text = line::decode(data);
    let Ok(parsed) = line::Line::parse(&text) else {
        return;
    };
    let _ = (
        parsed.nick(),
        parsed.prefix.as_ref().map(|p| p.is_user()),
        parsed.tag("time"),
    );
    let params: Vec<&str> = (0..parsed.params.len())
        .filter_map(|i| parsed.param(i))
        .collect();
    if let Some(body) = params.last() {
        let _ = format::ctcp(body);
        let converted = format::convert(body);
        for piece in split::split(&converted.plain, 400) {
            assert!(piece.len() <= 400, "a piece longer than asked");
        }
    }
    // Whatever parsed can be said again: the rebuilt line parses to the same command.
    if !parsed.command.is_empty() && params.iter().all(|p| !p.contains(['\r', '\n'])) {
        let rebuilt = line::build(&parsed.command, &params);
        if let Ok(again) = line::Line::parse(&rebuilt) {
            assert_eq!(again.command, parsed.command);
        }
    }
});
