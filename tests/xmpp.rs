//! End-to-end: the real `passerelle` binary between a real Prosody (an XMPP room), a real ngIRCd
//! and the HTTP message API.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use passerelle_xmpp::testing::client::{XmppClient, body, payload};
use passerelle_xmpp::testing::prosody::{DOMAIN, MUC, Prosody, UPLOAD};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};

const TOKEN: &str = "e2e-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

struct Bridge {
    xmpp: Prosody,
    irc: Ngircd,
    _dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
    room: BareJid,
}

async fn start() -> Bridge {
    start_in(MUC).await
}

/// The bridge with its room `lobby` on the MUC component `muc_domain`.
async fn start_in(muc_domain: &str) -> Bridge {
    let xmpp = Prosody::start();
    xmpp.register("bridge", "bridge-pw");
    xmpp.register("peer", "peer-pw");
    xmpp.register("observer", "observer-pw");
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let room = BareJid::from_str(&format!("lobby@{muc_domain}")).expect("a room");
    let config = format!(
        r##"
{head}
[accounts."xmpp.main"]
kind = "xmpp"
jid = "bridge@{DOMAIN}"
password = "bridge-pw"
server = "127.0.0.1"
port = {c2s}
tls_ca_file = "{ca}"
nick = "bridge"
ping_interval_secs = 5
ping_timeout_secs = 5
send_timeout_secs = 10
rights = ["read", "write", "delete"]

{irc_account}
{api_account}
[[links]]
name = "lobby"
rooms = [
  {{ account = "xmpp.main", room = "{room}" }},
  {{ account = "irc.main", room = "#x" }},
  {{ account = "api.main", room = "lobby" }},
]
"##,
        head = common::base_config(dir.path(), admin),
        c2s = xmpp.c2s_port,
        ca = xmpp.ca().display(),
        irc_account = common::irc_account(irc.port),
        api_account = common::api_account(api_port, TOKEN),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    Bridge {
        xmpp,
        irc,
        _dir: dir,
        daemon,
        api_port,
        room,
    }
}

fn el(xml: &str) -> Element {
    xml.parse().expect("test XML")
}

fn from_nick(m: &Message, nick: &str) -> bool {
    m.type_ == MessageType::Groupchat
        && m.from
            .as_ref()
            .and_then(|f| f.resource())
            .is_some_and(|r| r.as_str() == nick)
}

fn stanza_id(m: &Message) -> String {
    payload(m, "stanza-id", "urn:xmpp:sid:0")
        .and_then(|e| e.attr("id"))
        .expect("the room stamps a stanza-id")
        .to_owned()
}

/// The peer's message with `id`, as the room echoed it: its stanza-id.
async fn echoed(peer: &mut XmppClient, id: &str) -> String {
    let m = peer
        .next_message(WAIT, |m| {
            from_nick(m, "peer") && m.id.as_ref().is_some_and(|i| i.0 == id)
        })
        .await
        .expect("the room echoes the peer's message");
    stanza_id(&m)
}

/// Waits for the room's echo of the peer's message `id`, in a room that stamps no stanza-id.
async fn echoed_unstamped(peer: &mut XmppClient, id: &str) {
    peer.next_message(WAIT, |m| {
        from_nick(m, "peer") && m.id.as_ref().is_some_and(|i| i.0 == id)
    })
    .await
    .expect("the room echoes the peer's message");
}

async fn irc_line(irc: &mut IrcClient, what: &str) -> String {
    let got = irc
        .next_message(WAIT)
        .await
        .unwrap_or_else(|| panic!("IRC did not see {what}"));
    got.action().map(|a| format!("* {a}")).unwrap_or(got.text)
}

#[tokio::test]
async fn xmpp_room_events_reach_irc_and_the_api_and_back() {
    let b = start().await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#x").await;
    let mut peer = XmppClient::connect(&b.xmpp, "peer").await;
    peer.join(&b.room, "peer").await;

    // A message.
    let first = peer.say(&b.room, "hello from xmpp").await;
    let sid = echoed(&mut peer, &first).await;
    assert_eq!(
        irc_line(&mut irc, "the message").await,
        "<peer> hello from xmpp"
    );
    let m = stream.next(WAIT).await.expect("the API sees the message");
    assert_eq!(
        (m["text"].as_str(), m["username"].as_str()),
        (Some("hello from xmpp"), Some("peer"))
    );
    let api_id = m["id"].as_str().expect("an id").to_owned();

    // Its correction.
    let (mut c, _) = peer.message(&b.room, MessageType::Groupchat);
    c.bodies
        .insert(Lang::default(), "hello from xmpp, fixed".into());
    c.payloads.push(el(&format!(
        "<replace xmlns='urn:xmpp:message-correct:0' id='{first}'/>"
    )));
    peer.send(c).await;
    assert_eq!(
        irc_line(&mut irc, "the correction").await,
        "<peer> hello from xmpp, fixed (edited)"
    );
    let m = stream.next(WAIT).await.expect("the API sees the edit");
    assert_eq!(
        (m["text"].as_str(), m["id"].as_str()),
        (Some("hello from xmpp, fixed"), Some(api_id.as_str()))
    );

    // A reply to it.
    let (mut r, _) = peer.message(&b.room, MessageType::Groupchat);
    r.bodies.insert(Lang::default(), "an answer".into());
    r.payloads.push(el(&format!(
        "<reply xmlns='urn:xmpp:reply:0' to='{}/peer' id='{sid}'/>",
        b.room
    )));
    peer.send(r).await;
    assert_eq!(
        irc_line(&mut irc, "the reply").await,
        "<peer> (re peer) an answer"
    );
    let m = stream.next(WAIT).await.expect("the API sees the reply");
    assert_eq!(
        (m["text"].as_str(), m["parent_id"].as_str()),
        (Some("an answer"), Some(api_id.as_str()))
    );

    // A reaction.
    let (mut r, _) = peer.message(&b.room, MessageType::Groupchat);
    r.payloads.push(el(&format!(
        "<reactions xmlns='urn:xmpp:reactions:0' id='{sid}'><reaction>👍</reaction></reactions>"
    )));
    peer.send(r).await;
    assert_eq!(
        irc_line(&mut irc, "the reaction").await,
        "* peer reacted 👍 to peer's message"
    );
    let m = stream
        .next(WAIT)
        .await
        .expect("the API sees the reaction, as an action");
    assert_eq!(m["event"].as_str(), Some("user_action"));
    assert!(
        m["text"].as_str().is_some_and(|t| t.contains("reacted 👍")),
        "{m}"
    );

    // Its retraction.
    let (mut d, _) = peer.message(&b.room, MessageType::Groupchat);
    d.payloads.push(el(&format!(
        "<retract xmlns='urn:xmpp:message-retract:1' id='{sid}'/>"
    )));
    peer.send(d).await;
    assert_eq!(
        irc_line(&mut irc, "the retraction").await,
        "* peer deleted a message"
    );
    let m = stream.next(WAIT).await.expect("the API sees the delete");
    assert_eq!(
        (m["event"].as_str(), m["id"].as_str()),
        (Some("msg_delete"), Some(api_id.as_str()))
    );

    // A file, uploaded with HTTP file sharing and posted as an out-of-band link.
    let data = b"a file from xmpp\n".to_vec();
    let url = peer
        .upload(
            &Jid::from_str(UPLOAD).expect("a JID"),
            "note.txt",
            "text/plain",
            data.clone(),
        )
        .await;
    let (mut f, _) = peer.message(&b.room, MessageType::Groupchat);
    f.bodies.insert(Lang::default(), url.clone());
    f.payloads
        .push(el(&format!("<x xmlns='jabber:x:oob'><url>{url}</url></x>")));
    peer.send(f).await;
    let line = irc_line(&mut irc, "the file").await;
    assert_eq!(line, format!("<peer> note.txt: {url}"));
    let fetched = reqwest::get(&url).await.expect("the link works");
    assert!(fetched.status().is_success());
    assert_eq!(fetched.bytes().await.expect("the file").to_vec(), data);

    // The other way: IRC and the API into the room.
    irc.say("#x", "hello from irc").await;
    let seen = peer
        .next_message(WAIT, |m| {
            from_nick(m, "bridge") && body(m) == Some("<ircer> hello from irc")
        })
        .await;
    assert!(
        seen.is_some(),
        "the room sees the IRC message with its sender's name"
    );

    let (status, answer) = api
        .post(serde_json::json!({"text": "from the api", "username": "scripty", "gateway": "lobby", "parent_id": api_id}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let posted = answer["id"].as_str().expect("an id").to_owned();
    let seen = peer
        .next_message(WAIT, |m| {
            from_nick(m, "bridge") && body(m) == Some("<scripty> from the api")
        })
        .await
        .expect("the room sees the API message");
    let replied = payload(&seen, "reply", "urn:xmpp:reply:0").and_then(|e| e.attr("id"));
    assert_eq!(
        replied,
        Some(sid.as_str()),
        "a reply names the room's id of the message"
    );
    let ours = stanza_id(&seen);
    let origin = seen.id.clone().expect("an id").0;

    let (status, _) = api
        .post(serde_json::json!({"text": "from the api, edited", "username": "scripty", "gateway": "lobby", "id": posted}))
        .await;
    assert_eq!(status, 200);
    let seen = peer
        .next_message(WAIT, |m| {
            from_nick(m, "bridge") && body(m) == Some("<scripty> from the api, edited")
        })
        .await
        .expect("the room sees the correction");
    let replaced =
        payload(&seen, "replace", "urn:xmpp:message-correct:0").and_then(|e| e.attr("id"));
    assert_eq!(replaced, Some(origin.as_str()));

    let (status, _) = api
        .post(serde_json::json!({"event": "msg_delete", "username": "scripty", "gateway": "lobby", "id": posted}))
        .await;
    assert_eq!(status, 200);
    let seen = peer
        .next_message(WAIT, |m| {
            from_nick(m, "bridge") && payload(m, "retract", "urn:xmpp:message-retract:1").is_some()
        })
        .await
        .expect("the room sees the retraction");
    let retracted =
        payload(&seen, "retract", "urn:xmpp:message-retract:1").and_then(|e| e.attr("id"));
    assert_eq!(retracted, Some(ours.as_str()));
    peer.close().await;
}

/// Texts the bridge posted in the room, from its whole history as a fresh occupant sees it.
async fn room_history(b: &Bridge) -> HashMap<String, usize> {
    let mut observer = XmppClient::connect(&b.xmpp, "observer").await;
    observer.join_with_history(&b.room, "observer").await;
    let got = observer
        .messages_until(Duration::from_secs(5), |_| false)
        .await;
    let mut counts = HashMap::new();
    for m in got.iter().filter(|m| from_nick(m, "bridge")) {
        if let Some(text) = body(m) {
            *counts.entry(text.to_owned()).or_insert(0) += 1;
        }
    }
    observer.close().await;
    counts
}

#[tokio::test]
async fn a_prosody_restart_mid_stream_loses_and_duplicates_nothing() {
    let mut b = start().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#x").await;
    let mut sender = IrcClient::connect(b.irc.port, "talker").await;
    sender.join("#x").await;
    let mut peer = XmppClient::connect(&b.xmpp, "peer").await;
    peer.join(&b.room, "peer").await;

    // IRC → XMPP: a steady stream, with the XMPP server killed and started again in the middle.
    const IRC_TOTAL: usize = 40;
    const XMPP_BEFORE: usize = 5;
    const XMPP_AFTER: usize = 10;
    for i in 0..XMPP_BEFORE {
        let id = peer.say(&b.room, &format!("xmpp-{i}")).await;
        echoed(&mut peer, &id).await;
    }
    for i in 0..IRC_TOTAL {
        sender.say("#x", &format!("irc-{i}")).await;
        if i == 10 {
            b.xmpp.restart();
            // The peer is back first: what it says before the bridge has rejoined must still
            // reach IRC (catch-up from the room's history).
            peer = XmppClient::connect(&b.xmpp, "peer").await;
            peer.join(&b.room, "peer").await;
            for j in XMPP_BEFORE..XMPP_BEFORE + XMPP_AFTER {
                let id = peer.say(&b.room, &format!("xmpp-{j}")).await;
                echoed(&mut peer, &id).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every XMPP message reached IRC exactly once.
    let want_irc = XMPP_BEFORE + XMPP_AFTER;
    let lines = irc
        .messages_until(Duration::from_secs(60), |got| {
            got.iter().filter(|m| m.nick == "bridge").count() >= want_irc
        })
        .await;
    let extra = irc.messages_until(Duration::from_secs(3), |_| false).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in lines
        .iter()
        .chain(extra.iter())
        .filter(|m| m.nick == "bridge")
    {
        *seen.entry(m.text.clone()).or_insert(0) += 1;
    }
    for i in 0..want_irc {
        let text = format!("<peer> xmpp-{i}");
        assert_eq!(
            seen.get(&text),
            Some(&1),
            "{text} on IRC: {seen:?}\n{}",
            b.daemon.logs()
        );
    }
    assert_eq!(seen.len(), want_irc, "nothing else reached IRC: {seen:?}");

    // Every IRC message reached the room exactly once (waiting for the bridge's retries).
    let mut counts = HashMap::new();
    for _ in 0..12 {
        counts = room_history(&b).await;
        if (0..IRC_TOTAL).all(|i| counts.contains_key(&format!("<talker> irc-{i}"))) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for i in 0..IRC_TOTAL {
        let text = format!("<talker> irc-{i}");
        assert_eq!(
            counts.get(&text),
            Some(&1),
            "{text} in the room: {counts:?}\n{}",
            b.daemon.logs()
        );
    }
    assert_eq!(
        counts.len(),
        IRC_TOTAL,
        "nothing else reached the room: {counts:?}"
    );
    peer.close().await;
}

/// `depth` elements nested in one another inside a message's payload: what a hostile occupant
/// or stranger sends to crash a recursive parser. 20,000 levels are about 140 KB, under
/// Prosody's stanza limit.
fn nested_message(from: &str, to: &str, kind: &str, depth: usize) -> Vec<u8> {
    let mut s = format!(
        "<message from='{from}' to='{to}' type='{kind}' id='deep-{depth}'>\
         <body>deep canary</body><x xmlns='urn:example:deep'>"
    )
    .into_bytes();
    s.extend(std::iter::repeat_n(&b"<b>"[..], depth).flatten());
    s.extend(std::iter::repeat_n(&b"</b>"[..], depth).flatten());
    s.extend_from_slice(b"</x></message>");
    s
}

#[tokio::test]
async fn a_stanza_nested_thousands_deep_is_dropped_and_the_daemon_goes_on() {
    // Prosody relays such a message in a room that keeps only its in-memory history (archiving
    // it fails in Prosody's own serializer, which then drops it), and replays it from that
    // history to whoever joins asking for it.
    let mut b = start_in(passerelle_xmpp::testing::prosody::MUC_UNARCHIVED).await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#x").await;

    // Mallory joins the (persistent) room through the component, as any occupant can, and sends
    // deeply nested messages to the room and, directly, to the bridge's own address. (The test's
    // own XMPP client would overflow on them too: it joins only afterwards, asking for no
    // history.)
    let mut mallory = passerelle_xmpp::testing::prosody::RawComponent::connect(&b.xmpp).await;
    let occupant = format!("mallory@{}/x", passerelle_xmpp::testing::prosody::COMPONENT);
    mallory
        .send_raw(
            format!(
                "<presence from='{occupant}' to='{}/mallory'>\
                 <x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>",
                b.room
            )
            .as_bytes(),
        )
        .await;
    assert!(
        mallory.wait_for("status code='110'", WAIT).await,
        "mallory joined the room"
    );
    let depths = [5_000, 20_000];
    for depth in depths {
        mallory
            .send_raw(&nested_message(
                &occupant,
                &b.room.to_string(),
                "groupchat",
                depth,
            ))
            .await;
        mallory
            .send_raw(&nested_message(
                &occupant,
                &format!("bridge@{DOMAIN}"),
                "chat",
                depth,
            ))
            .await;
    }
    assert!(
        mallory.wait_for("id='deep-20000'", WAIT).await,
        "the room relayed the deep message back to its sender; it sent: {}\nprosody: {}",
        mallory.tail(2000),
        b.xmpp.log()
    );

    // What comes next is bridged as ever.
    let mut peer = XmppClient::connect(&b.xmpp, "peer").await;
    peer.join(&b.room, "peer").await;
    let id = peer.say(&b.room, "after the deep ones").await;
    echoed_unstamped(&mut peer, &id).await;
    assert_eq!(
        irc_line(&mut irc, "the message after").await,
        "<peer> after the deep ones",
        "{}",
        b.daemon.logs()
    );
    assert!(b.daemon.running(), "the daemon is alive");
    let dropped = |metrics: &str| {
        common::metric(
            metrics,
            "passerelle_drops_total",
            &[
                "account=\"xmpp.main\"",
                "reason=\"xmpp_stanza_too_deep_or_large\"",
            ],
        )
    };
    let want = (2 * depths.len()) as f64;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut counted = dropped(&b.daemon.metrics().await);
    while counted < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        counted = dropped(&b.daemon.metrics().await);
    }
    assert_eq!(
        counted, want,
        "each deep stanza (room and direct) counted once"
    );
    peer.close().await;

    // A restart joins the room again and asks for its history since the last message seen: the
    // deep one said meanwhile comes again from the room's history, and the daemon stays up.
    b.daemon.stop();
    mallory
        .send_raw(&nested_message(
            &occupant,
            &b.room.to_string(),
            "groupchat",
            20_000,
        ))
        .await;
    assert!(
        mallory.wait_for("id='deep-20000'", WAIT).await,
        "relayed again"
    );
    b.daemon.start_again();
    let ready = format!("http://127.0.0.1:{}/readyz", b.daemon.admin_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let up = reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after the restart; daemon:\n{}\nprosody:\n{}",
            b.daemon.logs(),
            b.xmpp.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(b.daemon.running(), "the daemon is alive after the catch-up");
    let mut peer = XmppClient::connect(&b.xmpp, "peer").await;
    peer.join(&b.room, "peer").await;
    let id = peer.say(&b.room, "after the restart").await;
    echoed_unstamped(&mut peer, &id).await;
    let lines = irc
        .messages_until(WAIT, |got| {
            got.iter().any(|m| m.text.contains("after the restart"))
        })
        .await;
    assert!(
        lines.iter().any(|m| m.text == "<peer> after the restart"),
        "IRC after the restart: {:?}; log:\n{}",
        lines.iter().map(|m| &m.text).collect::<Vec<_>>(),
        b.daemon.logs()
    );
    assert!(b.daemon.running(), "the daemon is alive after its restart");
    assert!(
        dropped(&b.daemon.metrics().await) >= 1.0,
        "the replayed deep message was dropped again"
    );
    let logs = b.daemon.logs();
    assert!(
        logs.contains("a stanza nested too deep or too large was dropped"),
        "the drop is logged"
    );
    assert!(!logs.contains("canary"), "no content in the log");
    peer.close().await;
}
