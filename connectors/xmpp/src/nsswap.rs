//! A component stream (XEP-0114) under parsers built for client streams.
//!
//! xmpp-parsers reads and writes stanzas in one namespace per build: `jabber:client` here, as
//! the client mode and the test client need. A component stream's stanzas are in
//! `jabber:component:accept`, but they say so only through the stream headers, which every stanza
//! inherits its namespace from. So the connection is wrapped: our header's `jabber:client` goes
//! out as `jabber:component:accept`, and the server's header's `jabber:component:accept` comes in
//! as `jabber:client`, with the `version='1.0'` a client stream has (a component stream has none,
//! and tokio-xmpp's header reader, built for client streams, requires it); the server's
//! `<handshake/>` that follows gets its component namespace back. Nothing after that changes:
//! every later byte passes through untouched, so message text is never rewritten.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const CLIENT: &[u8] = b"jabber:client";
const COMPONENT: &[u8] = b"jabber:component:accept";
/// A stream header is far shorter; more bytes without the namespace is not a stream header.
const MAX_HEADER: usize = 4096;

/// One direction: still looking for the namespace (holding what came so far), or through.
enum Swap {
    Looking(Vec<u8>),
    /// Swapped; these bytes are still to be handed on.
    Through(Vec<u8>, usize),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Replaces the first `from` in `held` by `to`, if it is there.
fn swapped(held: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let at = find(held, from)?;
    let mut out = Vec::with_capacity(held.len() + to.len());
    out.extend_from_slice(&held[..at]);
    out.extend_from_slice(to);
    out.extend_from_slice(&held[at + from.len()..]);
    Some(out)
}

/// The server's header, once all of its start tag is in `held`: its namespace read as a client
/// stream's, with a version. `Err` when the whole tag came without the component namespace.
fn server_header(held: &[u8]) -> Option<io::Result<(Vec<u8>, usize)>> {
    let start = find(held, b"stream:stream")?;
    let end = start + held[start..].iter().position(|&b| b == b'>')?;
    let tag = &held[start..end];
    let Some(at) = find(tag, COMPONENT).map(|i| i + start) else {
        return Some(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the server's stream is not a component stream",
        )));
    };
    let quote = at + COMPONENT.len();
    let mut out = Vec::with_capacity(held.len() + 16);
    out.extend_from_slice(&held[..at]);
    out.extend_from_slice(CLIENT);
    out.extend_from_slice(&held[quote..=quote]);
    if find(tag, b"version=").is_none() {
        out.extend_from_slice(b" version='1.0'");
    }
    let header_end = out.len() + (end - quote);
    out.extend_from_slice(&held[quote + 1..]);
    Some(Ok((out, header_end)))
}

/// The server's answer to our handshake, once it is in `held` after the header (which ends at
/// `from`): `<handshake/>` is given its component namespace back, as the parsers read it only
/// so. A stream error instead passes as it is.
fn handshake_answer(held: &[u8], from: usize) -> Option<Vec<u8>> {
    let rest = held.get(from..)?;
    if let Some(i) = find(rest, b"<handshake") {
        let at = from + i + b"<handshake".len();
        let mut out = held[..at].to_vec();
        out.extend_from_slice(b" xmlns='jabber:component:accept'");
        out.extend_from_slice(&held[at..]);
        return Some(out);
    }
    find(rest, b"<stream:error").map(|_| held.to_vec())
}

/// How far the server's side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the whole header.
    Header,
    /// Header handed on; waiting for the answer to our handshake.
    Handshake,
    /// Everything passes through.
    Done,
}

/// The server's side: bytes held back, and bytes ready to hand on.
struct ReadSide {
    phase: Phase,
    held: Vec<u8>,
    ready: Vec<u8>,
    at: usize,
}

impl ReadSide {
    /// Moves what can be handed on from `held` to `ready`. The header goes as soon as it is
    /// whole (we answer it with our handshake, so it can't wait for more).
    fn advance(&mut self) -> io::Result<()> {
        if self.at == self.ready.len() {
            self.ready.clear();
            self.at = 0;
        }
        if self.phase == Phase::Header {
            match server_header(&self.held) {
                Some(swapped) => {
                    let (out, end) = swapped?;
                    self.ready.extend_from_slice(&out[..end]);
                    self.held = out[end..].to_vec();
                    self.phase = Phase::Handshake;
                }
                None if self.held.len() > MAX_HEADER => return Err(too_long("the server's")),
                None => return Ok(()),
            }
        }
        if self.phase == Phase::Handshake {
            if let Some(out) = handshake_answer(&self.held, 0) {
                self.ready.extend_from_slice(&out);
                self.held.clear();
                self.phase = Phase::Done;
            } else if self.held.len() > MAX_HEADER {
                self.ready.append(&mut self.held);
                self.phase = Phase::Done;
            }
        }
        Ok(())
    }
}

/// The wrapped connection.
pub struct NamespaceSwap<S> {
    inner: S,
    read: ReadSide,
    write: Swap,
}

impl<S> NamespaceSwap<S> {
    /// Wraps a fresh component connection (nothing read or written yet).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            read: ReadSide {
                phase: Phase::Header,
                held: Vec::new(),
                ready: Vec::new(),
                at: 0,
            },
            write: Swap::Looking(Vec::new()),
        }
    }
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} stream header has no namespace within {MAX_HEADER} bytes"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for NamespaceSwap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            let r = &mut me.read;
            if r.at < r.ready.len() {
                let n = (r.ready.len() - r.at).min(buf.remaining());
                buf.put_slice(&r.ready[r.at..r.at + n]);
                r.at += n;
                return Poll::Ready(Ok(()));
            }
            if r.phase == Phase::Done {
                return Pin::new(&mut me.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // Closed early: hand on what there is (the parser says what is wrong), then EOF.
                r.phase = Phase::Done;
                r.ready = std::mem::take(&mut r.held);
                r.at = 0;
                if r.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            r.held.extend_from_slice(rb.filled());
            r.advance()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NamespaceSwap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if let Swap::Looking(held) = &mut me.write {
            held.extend_from_slice(buf);
            if let Some(out) = swapped(held, CLIENT, COMPONENT) {
                me.write = Swap::Through(out, 0);
            } else if held.len() > MAX_HEADER {
                return Poll::Ready(Err(too_long("our")));
            }
            // Taken; it goes out with the next write or flush.
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(me.drain(cx))?;
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.drain(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncWrite + Unpin> NamespaceSwap<S> {
    /// Writes out the swapped header (nothing while still looking for the namespace).
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Swap::Through(held, at) = &mut self.write
            && *at < held.len()
        {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &held[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        if let Swap::Through(held, at) = &mut self.write
            && *at == held.len()
            && !held.is_empty()
        {
            *held = Vec::new();
            *at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn only_the_headers_namespaces_are_swapped() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut swap = NamespaceSwap::new(ours);
        // Our header, written in pieces, goes out in the component namespace.
        swap.write_all(b"<stream:stream xmlns='jabber:cl")
            .await
            .unwrap();
        swap.write_all(b"ient' to='c.example'>").await.unwrap();
        swap.write_all(b"<message><body>jabber:client</body></message>")
            .await
            .unwrap();
        swap.flush().await.unwrap();
        let mut got = vec![0u8; 200];
        let n = theirs.read(&mut got).await.unwrap();
        let mut got = got[..n].to_vec();
        while !got.ends_with(b"</message>") {
            let mut more = vec![0u8; 200];
            let n = theirs.read(&mut more).await.unwrap();
            got.extend_from_slice(&more[..n]);
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "<stream:stream xmlns='jabber:component:accept' to='c.example'>\
             <message><body>jabber:client</body></message>"
        );
        // Their header comes in as a client stream; a stanza's text is left alone.
        theirs
            .write_all(b"<stream:stream xmlns='jabber:comp")
            .await
            .unwrap();
        theirs
            .write_all(b"onent:accept' id='1'><hand")
            .await
            .unwrap();
        theirs
            .write_all(b"shake/><message><body>jabber:component:accept</body></message>")
            .await
            .unwrap();
        drop(theirs);
        let mut read = String::new();
        swap.read_to_string(&mut read).await.unwrap();
        assert_eq!(
            read,
            "<stream:stream xmlns='jabber:client' version='1.0' id='1'>\
             <handshake xmlns='jabber:component:accept'/>\
             <message><body>jabber:component:accept</body></message>"
        );
    }
}
