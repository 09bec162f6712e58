//! The conformance suite every connector passes against its real server (or a faithful fake).
//!
//! A connector's test implements [`Peer`] (a plain user on the network, in one room the connector
//! also serves) and calls [`run`]. Each check states what it expects; [`run`] panics with every
//! failed check listed.

use crate::harness::Harness;
use futures::future::BoxFuture;
use passerelle_sdk::{
    Capabilities, Connector, Content, Event, EventKey, EventKind, MessageKind, RoomId, SendError,
    Sender, UserId,
};
use std::time::Duration;

/// One message a peer saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its text, without any protocol framing.
    pub text: String,
    /// Whether it was an action (`/me`).
    pub emote: bool,
}

/// A plain user of the network, in [`Peer::room`].
pub trait Peer: Send {
    /// The room the peer and the connector share.
    fn room(&self) -> RoomId;
    /// A room the connector does not serve.
    fn unknown_room(&self) -> RoomId;
    /// The id the connector reports for the peer's messages.
    fn user(&self) -> UserId;
    /// Says `text` in the room.
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()>;
    /// Acts `text` (`/me`) in the room.
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()>;
    /// For connectors that serve HTTP on the daemon's listener (webhooks, Matrix appservices): the
    /// loopback port the network calls them on. The suite serves the connector's endpoints there.
    fn http_port(&self) -> Option<u16> {
        None
    }
    /// Called once the connector reports Connected, before any check (open a stream, join...).
    fn ready(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Messages the peer sees in the room from now on, until their texts add up to `min_bytes` or
    /// `timeout` passes.
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>>;
}

const WAIT: Duration = Duration::from_secs(20);

/// For a [`Peer::collect`] on a network without actions, where the bridge sends `/me text`:
/// polls `sent` (the texts sent to the peer's room since its last call) every 50 ms until their
/// bytes add up to `min_bytes` or `timeout` passes. A text starting with `/me ` is an action.
pub async fn collect_sent(
    min_bytes: usize,
    timeout: Duration,
    mut sent: impl FnMut() -> Vec<String> + Send,
) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Vec<Seen> = Vec::new();
    while seen.iter().map(|s| s.text.len()).sum::<usize>() < min_bytes
        && tokio::time::Instant::now() < deadline
    {
        seen.extend(
            sent()
                .into_iter()
                .map(|text| match text.strip_prefix("/me ") {
                    Some(rest) => Seen {
                        text: rest.to_owned(),
                        emote: true,
                    },
                    None => Seen { text, emote: false },
                }),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

fn marker(label: &str) -> String {
    format!("conformance-{label}-{}", EventKey::new())
}

/// A 1,000-byte text of 1-, 2-, 3- and 4-byte characters with spaces, for splitting checks.
pub fn long_utf8_text() -> String {
    let mut text = String::new();
    let pieces = ["a", "é", "語", "🦀", " ", "z", "ß", "ü", "中", " "];
    let mut i = 0;
    while text.len() < 996 {
        text.push_str(pieces[i % pieces.len()]);
        i += 1;
    }
    while text.len() < 1000 {
        text.push('x');
    }
    text
}

fn outbound(room: RoomId, kind: EventKind) -> Event {
    let mut sender = Sender::new("conformance");
    sender.display_name = Some("conformance".into());
    Event::new(room, sender, kind)
}

/// Runs the whole suite: `make` builds a fresh connector; `rooms` are the rooms it serves (the
/// peer's among them). Panics listing every failed check.
pub async fn run(make: &dyn Fn() -> Box<dyn Connector>, peer: &mut dyn Peer, rooms: Vec<RoomId>) {
    let mut failures: Vec<String> = Vec::new();
    let connector = make();
    let caps = connector.capabilities();
    let mut h = Harness::start(connector, "conformance.account", rooms);
    if let Some(port) = peer.http_port() {
        h.serve_http(port).await;
    }
    if !h.wait_connected(Duration::from_secs(30)).await {
        panic!("conformance: the connector did not report Connected within 30 s");
    }
    peer.ready().await;
    for (name, result) in [
        ("inbound_message", inbound_message(&mut h, peer).await),
        ("inbound_emote", inbound_emote(&mut h, peer).await),
        ("outbound_message", outbound_message(&mut h, peer).await),
        ("outbound_long_utf8", outbound_long_utf8(&mut h, peer).await),
        ("outbound_emote", outbound_emote(&mut h, peer).await),
        (
            "unsupported_is_refused",
            unsupported_is_refused(&mut h, peer, caps).await,
        ),
        (
            "unknown_room_is_refused",
            unknown_room_is_refused(&mut h, peer).await,
        ),
    ] {
        if let Err(why) = result {
            failures.push(format!("{name}: {why}"));
        }
    }
    match h.shutdown(Duration::from_secs(10)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => failures.push(format!("shutdown: run returned an error: {e}")),
        None => failures.push("shutdown: run did not return within 10 s of shutdown".into()),
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}

async fn inbound_message(h: &mut Harness, peer: &mut dyn Peer) -> Result<(), String> {
    let text = marker("in");
    peer.say(&text).await;
    let room = peer.room();
    let event = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == text),
        )
        .await
        .ok_or("the peer's message was not emitted")?;
    if event.room != room {
        return Err(format!("emitted in room {}, expected {room}", event.room));
    }
    if event.sender.id != peer.user() {
        return Err(format!(
            "sender {}, expected {}",
            event.sender.id,
            peer.user()
        ));
    }
    match event.content().map(|c| c.kind) {
        Some(MessageKind::Normal) => Ok(()),
        other => Err(format!("kind {other:?}, expected Normal")),
    }
}

async fn inbound_emote(h: &mut Harness, peer: &mut dyn Peer) -> Result<(), String> {
    let text = marker("act");
    peer.act(&text).await;
    let event = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == text),
        )
        .await
        .ok_or("the peer's action was not emitted with its text")?;
    match event.content().map(|c| c.kind) {
        Some(MessageKind::Emote) => Ok(()),
        other => Err(format!("kind {other:?}, expected Emote")),
    }
}

async fn send_and_collect(
    h: &mut Harness,
    peer: &mut dyn Peer,
    content: Content,
) -> Result<Vec<Seen>, String> {
    let want = content.text.len();
    let room = peer.room();
    match h
        .send(outbound(room, EventKind::Message(content)), WAIT)
        .await
    {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(format!("send refused: {e}")),
        None => return Err("no answer to the send within 20 s".into()),
    }
    Ok(peer.collect(want, WAIT).await)
}

async fn outbound_message(h: &mut Harness, peer: &mut dyn Peer) -> Result<(), String> {
    let text = marker("out");
    let seen = send_and_collect(h, peer, Content::plain(text.clone())).await?;
    if seen.iter().any(|s| s.text == text && !s.emote) {
        Ok(())
    } else {
        Err(format!(
            "the peer saw {} message(s), not the one sent",
            seen.len()
        ))
    }
}

async fn outbound_long_utf8(h: &mut Harness, peer: &mut dyn Peer) -> Result<(), String> {
    let text = long_utf8_text();
    let seen = send_and_collect(h, peer, Content::plain(text.clone())).await?;
    let joined: String = seen.iter().map(|s| s.text.as_str()).collect();
    if joined == text {
        Ok(())
    } else {
        Err(format!(
            "the peer's {} piece(s) join to {} bytes, not the {} bytes sent intact",
            seen.len(),
            joined.len(),
            text.len()
        ))
    }
}

async fn outbound_emote(h: &mut Harness, peer: &mut dyn Peer) -> Result<(), String> {
    let text = marker("out-act");
    let seen = send_and_collect(h, peer, Content::emote(text.clone())).await?;
    if seen.iter().any(|s| s.text == text && s.emote) {
        Ok(())
    } else {
        Err("the peer did not see the action as an action".into())
    }
}

async fn unsupported_is_refused(
    h: &mut Harness,
    peer: &mut dyn Peer,
    caps: Capabilities,
) -> Result<(), String> {
    let room = peer.room();
    let mut checks: Vec<EventKind> = Vec::new();
    if !caps.edits {
        checks.push(EventKind::Edit {
            target: "conformance-target".into(),
            content: Content::plain("edit"),
        });
    }
    if !caps.deletes {
        checks.push(EventKind::Delete {
            target: "conformance-target".into(),
        });
    }
    if !caps.reactions {
        checks.push(EventKind::Reaction {
            target: "conformance-target".into(),
            key: "👍".into(),
            removed: false,
        });
    }
    for kind in checks {
        let name = kind.name();
        match h.send(outbound(room.clone(), kind), WAIT).await {
            Some(Err(SendError::Unsupported(_))) => {}
            Some(other) => {
                return Err(format!(
                    "{name} on a network that can't carry it answered {other:?}"
                ));
            }
            None => return Err(format!("{name}: no answer within 20 s")),
        }
    }
    Ok(())
}

async fn unknown_room_is_refused(h: &mut Harness, peer: &mut dyn Peer) -> Result<(), String> {
    let room = peer.unknown_room();
    match h
        .send(
            outbound(room, EventKind::Message(Content::plain(marker("nowhere")))),
            WAIT,
        )
        .await
    {
        Some(Err(_)) => Ok(()),
        Some(Ok(_)) => Err("a send to a room the connector does not serve succeeded".into()),
        None => Err("no answer within 20 s".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_long_text_is_1000_bytes_of_mixed_widths() {
        let t = super::long_utf8_text();
        assert_eq!(t.len(), 1000);
        assert!(t.chars().any(|c| c.len_utf8() == 4));
        assert!(t.chars().any(|c| c.len_utf8() == 3));
    }
}
