//! Markdown from a network read into the HTML subset, and any HTML written back as Markdown, in
//! every flavor, Slack's mrkdwn too (`passerelle_sdk::markdown`): nothing may panic, what comes
//! out as HTML is inside the subset (sanitizing it again changes nothing), and no link is to
//! anything but http(s) or
//! mailto.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_sdk::html;
use passerelle_sdk::markdown::{Flavor, from_html, to_html};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for flavor in [Flavor::CommonMark, Flavor::Discord, Flavor::Slack] {
        let read = to_html(text, flavor);
        assert_eq!(html::sanitize(&read), read, "outside the subset");
        for link in read.split("<a href=\"").skip(1) {
            let l = link.to_ascii_lowercase();
            assert!(
                l.starts_with("https://") || l.starts_with("http://") || l.starts_with("mailto:"),
                "unsafe link"
            );
        }
        let written = from_html(text, flavor);
        let _ = to_html(&written, flavor);
    }
});
