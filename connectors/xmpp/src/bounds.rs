//! Depth and size bounds on every stanza, checked on the raw bytes before any parser sees them.
//!
//! tokio-xmpp's element builder recurses once per level of nesting, so one stanza nested a few
//! thousand levels deep (a few dozen KB, well under a server's stanza limit, and relayed by it
//! from any room occupant or any address) would overflow a worker's stack and kill the daemon.
//! [`Bounded`] sits between the connection and the XML stream: it follows the markup with a small
//! lexer (tags, quoted attribute values, comments, CDATA, processing instructions), holds each
//! top-level element (a stanza or nonza) until it is complete, and hands it on only if it stayed
//! within [`MAX_DEPTH`] levels and [`MAX_STANZA_BYTES`] bytes. A stanza past either bound is
//! dropped whole (its bytes are never held past the bound), counted in
//! `passerelle_drops_total{reason}` and logged with its size only; the stream goes on with the next
//! stanza. Stream headers (also the new ones after STARTTLS and SASL) and the whitespace between
//! stanzas pass as they come. Writes pass through untouched.

use passerelle_sdk::AccountId;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The deepest a stanza may nest, counting the stanza's own element as 1. Real stanzas stay
/// far below (a MAM result with a forwarded, formatted message is about 10).
pub const MAX_DEPTH: usize = 64;
/// The largest stanza kept, in bytes (Prosody's default client limit is 256 KiB).
pub const MAX_STANZA_BYTES: usize = 1024 * 1024;

/// Where the lexer is in the markup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Character data.
    Text,
    /// Just after `<`.
    Open,
    /// In a start tag's name (its first bytes are kept in `name`).
    StartName,
    /// In a start tag, after its name; `quote` is the open attribute quote, `slash` whether the
    /// last significant byte was `/` (an empty element when `>` follows).
    StartTag { quote: Option<u8>, slash: bool },
    /// In an end tag.
    EndTag,
    /// After `<!`, having matched this many bytes of `--` or `[CDATA[`.
    Bang { matched: u8, cdata: bool },
    /// In a comment; how many `-` came last.
    Comment { dashes: u8 },
    /// In a CDATA section; how many `]` came last.
    Cdata { brackets: u8 },
    /// In a `<!...>` declaration (no XMPP stream has one; followed only to stay in step).
    Declaration,
    /// In a processing instruction; whether `?` came last.
    Pi { question: bool },
}

/// What became of the stanza being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// Between stanzas: bytes pass as they come.
    None,
    /// Holding a stanza's bytes until it ends.
    Holding,
    /// The stanza went past a bound: following it to its end without keeping its bytes.
    Dropping,
}

/// The lexer and the stanza it holds.
#[derive(Debug)]
pub struct Scanner {
    lex: Lex,
    /// Open elements, the stream header counting as 1.
    depth: usize,
    /// Depth reached by the stanza being dropped (for the log).
    deepest: usize,
    /// Bytes of the stanza being dropped (for the log).
    dropped_bytes: usize,
    hold: Hold,
    /// The start of the current start tag's name (enough to know a stream header).
    name: [u8; 16],
    name_len: usize,
    /// Bytes held for the current stanza.
    held: Vec<u8>,
    /// Stanzas dropped so far.
    pub dropped: u64,
}

/// One stanza that was dropped, for the caller to count and log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// How deep it went before it was dropped (at least `MAX_DEPTH + 1` when too deep).
    pub depth: usize,
    /// Its size in bytes, as far as it was read.
    pub bytes: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            lex: Lex::Text,
            depth: 0,
            deepest: 0,
            dropped_bytes: 0,
            hold: Hold::None,
            name: [0; 16],
            name_len: 0,
            held: Vec::new(),
            dropped: 0,
        }
    }
}

impl Scanner {
    /// Feeds `input`; what may be parsed is appended to `out`, and each stanza dropped on the way
    /// is reported to `on_drop`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, on_drop: &mut impl FnMut(Dropped)) {
        for &b in input {
            if self.lex == Lex::Text && b == b'<' && self.depth == 1 && self.hold == Hold::None {
                self.hold = Hold::Holding;
            }
            match self.hold {
                Hold::None => out.push(b),
                Hold::Holding => self.held.push(b),
                Hold::Dropping => self.dropped_bytes += 1,
            }
            self.step(b);
            if self.hold == Hold::Holding
                && (self.depth > MAX_DEPTH + 1 || self.held.len() > MAX_STANZA_BYTES)
            {
                self.hold = Hold::Dropping;
                self.deepest = self.depth;
                self.dropped_bytes = self.held.len();
                self.held = Vec::new();
            }
            if self.hold == Hold::Dropping {
                self.deepest = self.deepest.max(self.depth);
            }
            // Back between stanzas (or the stream closed): the stanza is complete.
            if self.hold != Hold::None && self.lex == Lex::Text && self.depth <= 1 {
                match self.hold {
                    Hold::Holding => out.append(&mut self.held),
                    _ => {
                        self.dropped += 1;
                        on_drop(Dropped {
                            depth: self.deepest - 1,
                            bytes: self.dropped_bytes,
                        });
                    }
                }
                self.hold = Hold::None;
            }
        }
    }

    /// A start tag ended with `>` (`empty`: with `/>`).
    fn opened(&mut self, empty: bool) {
        let name = &self.name[..self.name_len];
        let header = name == b"stream:stream" || name == b"stream";
        if header && self.depth <= 1 {
            // A stream header: the first, or a new one after STARTTLS or SASL.
            self.depth = 1;
        } else if !empty {
            self.depth += 1;
        }
    }

    fn step(&mut self, b: u8) {
        self.lex = match self.lex {
            Lex::Text => {
                if b == b'<' {
                    Lex::Open
                } else {
                    Lex::Text
                }
            }
            Lex::Open => match b {
                b'/' => Lex::EndTag,
                b'!' => Lex::Bang {
                    matched: 0,
                    cdata: false,
                },
                b'?' => Lex::Pi { question: false },
                _ => {
                    self.name_len = 0;
                    self.push_name(b);
                    Lex::StartName
                }
            },
            Lex::StartName => match b {
                b'>' => {
                    self.opened(false);
                    Lex::Text
                }
                b'/' => Lex::StartTag {
                    quote: None,
                    slash: true,
                },
                b if b.is_ascii_whitespace() => Lex::StartTag {
                    quote: None,
                    slash: false,
                },
                _ => {
                    self.push_name(b);
                    Lex::StartName
                }
            },
            Lex::StartTag {
                quote: Some(q),
                slash,
            } => Lex::StartTag {
                quote: (b != q).then_some(q),
                slash,
            },
            Lex::StartTag { quote: None, slash } => match b {
                b'"' | b'\'' => Lex::StartTag {
                    quote: Some(b),
                    slash: false,
                },
                b'/' => Lex::StartTag {
                    quote: None,
                    slash: true,
                },
                b'>' => {
                    self.opened(slash);
                    Lex::Text
                }
                b if b.is_ascii_whitespace() => Lex::StartTag { quote: None, slash },
                _ => Lex::StartTag {
                    quote: None,
                    slash: false,
                },
            },
            Lex::EndTag => {
                if b == b'>' {
                    self.depth = self.depth.saturating_sub(1);
                    Lex::Text
                } else {
                    Lex::EndTag
                }
            }
            Lex::Bang { matched, cdata } => {
                const CDATA: &[u8] = b"[CDATA[";
                match (matched, cdata, b) {
                    (0, _, b'-') => Lex::Bang {
                        matched: 1,
                        cdata: false,
                    },
                    (1, false, b'-') => Lex::Comment { dashes: 0 },
                    (0, _, b'[') => Lex::Bang {
                        matched: 1,
                        cdata: true,
                    },
                    (m, true, b) if CDATA.get(m as usize) == Some(&b) => {
                        if m as usize + 1 == CDATA.len() {
                            Lex::Cdata { brackets: 0 }
                        } else {
                            Lex::Bang {
                                matched: m + 1,
                                cdata: true,
                            }
                        }
                    }
                    (_, _, b'>') => Lex::Text,
                    _ => Lex::Declaration,
                }
            }
            Lex::Comment { dashes } => match b {
                b'-' => Lex::Comment {
                    dashes: dashes.saturating_add(1),
                },
                b'>' if dashes >= 2 => Lex::Text,
                _ => Lex::Comment { dashes: 0 },
            },
            Lex::Cdata { brackets } => match b {
                b']' => Lex::Cdata {
                    brackets: brackets.saturating_add(1),
                },
                b'>' if brackets >= 2 => Lex::Text,
                _ => Lex::Cdata { brackets: 0 },
            },
            Lex::Declaration => {
                if b == b'>' {
                    Lex::Text
                } else {
                    Lex::Declaration
                }
            }
            Lex::Pi { question } => match b {
                b'>' if question => Lex::Text,
                b'?' => Lex::Pi { question: true },
                _ => Lex::Pi { question: false },
            },
        };
    }

    fn push_name(&mut self, b: u8) {
        if self.name_len < self.name.len() {
            self.name[self.name_len] = b;
            self.name_len += 1;
        } else {
            // Longer than any name we look for: make sure it matches none.
            self.name[0] = 0;
        }
    }
}

/// A connection whose reads pass through a [`Scanner`].
pub struct Bounded<S> {
    inner: S,
    scanner: Scanner,
    account: AccountId,
    /// Bytes ready to be read, from `at` on.
    ready: Vec<u8>,
    at: usize,
    raw: Box<[u8]>,
}

impl<S> Bounded<S> {
    /// Wraps `inner`; drops are counted for `account`.
    pub fn new(inner: S, account: AccountId) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            account,
            ready: Vec::new(),
            at: 0,
            raw: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The connection inside (for STARTTLS, which starts over on the plain stream).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.at);
                buf.put_slice(&this.ready[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            this.ready.clear();
            this.at = 0;
            let mut raw = ReadBuf::new(&mut this.raw);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            let input = raw.filled();
            if input.is_empty() {
                // The end of the stream: whatever a cut-off stanza held is not handed on.
                return Poll::Ready(Ok(()));
            }
            let account = &this.account;
            this.scanner
                .feed(input, &mut this.ready, &mut |dropped: Dropped| {
                    passerelle_sdk::drops::inbound(account, "xmpp_stanza_too_deep_or_large");
                    tracing::warn!(
                        account = %account,
                        depth = dropped.depth,
                        bytes = dropped.bytes,
                        max_depth = MAX_DEPTH,
                        max_bytes = MAX_STANZA_BYTES,
                        "a stanza nested too deep or too large was dropped before parsing"
                    );
                });
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0' id='s1'>";

    fn scan(chunks: &[&[u8]]) -> (Vec<u8>, Vec<Dropped>) {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        let mut drops = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, &mut out, &mut |d| drops.push(d));
        }
        (out, drops)
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut s = b"<message from='a@example.org/x' type='groupchat'>".to_vec();
        for _ in 1..depth {
            s.extend_from_slice(b"<b>");
        }
        s.extend_from_slice(b"deep");
        for _ in 1..depth {
            s.extend_from_slice(b"</b>");
        }
        s.extend_from_slice(b"</message>");
        s
    }

    #[test]
    fn stanzas_within_bounds_pass_whole_and_unchanged() {
        let good = b"<message to='a@b' type='chat'><body a='x>y' b=\"/>\">1 &lt; 2 <![CDATA[<x>]]></body><!-- <c> --><empty/></message>";
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b"\n ");
        input.extend_from_slice(good);
        input.extend_from_slice(&nested(MAX_DEPTH));
        input.extend_from_slice(b" </stream:stream>");
        let (out, drops) = scan(&[&input]);
        assert_eq!(out, input);
        assert!(drops.is_empty());
    }

    #[test]
    fn a_stanza_past_the_depth_bound_is_dropped_and_the_next_one_passes() {
        for depth in [MAX_DEPTH + 1, 5_000, 20_000] {
            let deep = nested(depth);
            let next = b"<message><body>next</body></message>";
            let mut input = HEADER.to_vec();
            input.extend_from_slice(&deep);
            input.extend_from_slice(next);
            // Byte by byte and in one piece: the result is the same.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            for chunks in [vec![&input[..]], bytes] {
                let (out, drops) = scan(&chunks);
                let mut expected = HEADER.to_vec();
                expected.extend_from_slice(next);
                assert_eq!(out, expected, "depth {depth}");
                assert_eq!(
                    drops,
                    [Dropped {
                        depth,
                        bytes: deep.len()
                    }]
                );
            }
        }
    }

    #[test]
    fn a_stanza_past_the_size_bound_is_dropped() {
        let mut big = b"<message><body>".to_vec();
        big.resize(MAX_STANZA_BYTES + 10, b'a');
        big.extend_from_slice(b"</body></message>");
        let mut input = HEADER.to_vec();
        input.extend_from_slice(&big);
        let next: &[u8] = b"<iq type='get' id='1'/>";
        input.extend_from_slice(next);
        let (out, drops) = scan(&[&input]);
        assert_eq!(out, [HEADER, next].concat());
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].bytes, big.len());
    }

    #[test]
    fn a_restarted_stream_header_does_not_count_as_depth() {
        // After STARTTLS or SASL the server sends a new header inside the old stream.
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        input.extend_from_slice(HEADER);
        input.extend_from_slice(HEADER);
        input.extend_from_slice(&nested(MAX_DEPTH));
        let (out, drops) = scan(&[&input]);
        assert_eq!(out, input);
        assert!(drops.is_empty());
    }

    /// The real parser behind the bounds, on a thread with a small stack: a stanza 20,000 levels
    /// deep (without the bounds, tokio-xmpp's builder recursed through any stack) is dropped,
    /// counted, and the message after it is read.
    #[test]
    fn the_parser_reads_on_past_a_deep_stanza_on_a_small_stack() {
        use crate::transport::{Read, Stream, read};
        use tokio_xmpp::Stanza;
        use tokio_xmpp::connect::AsyncReadAndWrite;
        use tokio_xmpp::parsers::ns;
        use tokio_xmpp::xmlstream::{self, StreamHeader, Timeouts, XmppStreamElement};

        let mut input = HEADER.to_vec();
        input.extend_from_slice(b"<stream:features/>");
        input.extend_from_slice(&nested(20_000));
        input.extend_from_slice(b"<message type='chat'><body>after</body></message>");
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async move {
                    let io = tokio::io::join(std::io::Cursor::new(input), tokio::io::sink());
                    let bounded = Bounded::new(io, AccountId::new("xmpp.test"));
                    let io: Box<dyn AsyncReadAndWrite + Send> =
                        Box::new(tokio::io::BufStream::new(bounded));
                    let header = StreamHeader {
                        to: Some(std::borrow::Cow::Borrowed("example.org")),
                        from: None,
                        id: None,
                    };
                    let pending = xmlstream::initiate_stream(
                        io,
                        ns::JABBER_CLIENT,
                        header,
                        Timeouts::tight(),
                    )
                    .await
                    .expect("the stream opens");
                    let (_, mut stream): (_, Stream) =
                        pending.recv_features().await.expect("features");
                    let mut bodies = Vec::new();
                    while let Ok(got) = read(&mut stream).await {
                        if let Read::Element(el) = got
                            && let XmppStreamElement::Stanza(Stanza::Message(m)) = *el
                        {
                            bodies.extend(m.bodies.values().cloned());
                        }
                    }
                    bodies
                })
            })
            .expect("a thread");
        let bodies = worker.join().expect("no stack overflow, no panic");
        assert_eq!(bodies, ["after"]);
    }

    #[test]
    fn a_stanza_cut_off_is_not_handed_on() {
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b"<message><body>half");
        let (out, _) = scan(&[&input]);
        assert_eq!(out, HEADER);
    }
}
