//! Bytes from an XMPP server after its stream header and features, cut anywhere: through the
//! connector's depth and size bounds into tokio-xmpp's parser, each message read into events.
//! Run on a thread with a small stack, so that a stanza nested deep enough to recurse through it
//! shows as a crash within the fuzzer's few KB of input. Never a panic, never a stack overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_sdk::AccountId;
use passerelle_xmpp::bounds::Bounded;
use passerelle_xmpp::transport::{Read, Stream, read};
use std::borrow::Cow;
use std::str::FromStr;
use tokio::io::BufStream;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::AsyncReadAndWrite;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::xmlstream::{self, StreamHeader, Timeouts, XmppStreamElement};

const OPENING: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0' from='example.org' id='s1'>\
    <stream:features/>";

fn run(data: &[u8]) {
    let input = [OPENING, data].concat();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let io = tokio::io::join(std::io::Cursor::new(input), tokio::io::sink());
        let io: Box<dyn AsyncReadAndWrite + Send> = Box::new(BufStream::new(Bounded::new(
            io,
            AccountId::new("xmpp.fuzz"),
        )));
        let header = StreamHeader {
            to: Some(Cow::Borrowed("example.org")),
            from: None,
            id: None,
        };
        let Ok(pending) =
            xmlstream::initiate_stream(io, ns::JABBER_CLIENT, header, Timeouts::tight()).await
        else {
            return;
        };
        let Ok((_, mut stream)) = pending.recv_features().await else {
            return;
        };
        let stream: &mut Stream = &mut stream;
        let room = BareJid::from_str("room@muc.example.org").expect("a room address");
        while let Ok(got) = read(stream).await {
            if let Read::Element(el) = got
                && let XmppStreamElement::Stanza(Stanza::Message(m)) = *el
            {
                let _ = passerelle_xmpp::stanza::parse(&m, &room);
            }
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    let worker = std::thread::Builder::new()
        .stack_size(160 * 1024)
        .spawn(move || run(&data));
    if let Ok(worker) = worker {
        worker.join().expect("no panic while reading a stream");
    }
});
