//! End-to-end: the real `passerelle` binary between a real ngIRCd and the HTTP message API.

mod common;

use common::{Api, Daemon, files_containing, free_port, metric};
use passerelle_testkit::conformance::long_utf8_text;
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_secs(3);

struct Bridge {
    irc: Ngircd,
    dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
}

/// IRC `#a` and `#b` and API gateway `lobby` are linked; `#c` is linked only to API gateway
/// `other`, so the bridge sits in `#c` but nothing from `#a` may reach it.
fn config(irc_port: u16, admin: u16, api_port: u16, dir: &std::path::Path, extra: &str) -> String {
    format!(
        r##"
{head}
[accounts."irc.main"]
kind = "irc"
server = "127.0.0.1"
port = {irc_port}
tls = false
nick = "bridge"
send_rate_per_second = 0

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc.main", room = "#a" }},
  {{ account = "irc.main", room = "#b" }},
  {{ account = "api.main", room = "lobby" }},
]

[[links]]
name = "other"
rooms = [
  {{ account = "irc.main", room = "#c" }},
  {{ account = "api.main", room = "other" }},
]
{extra}
"##,
        head = common::base_config(dir, admin)
    )
}

async fn start(extra: &str) -> Bridge {
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let daemon = Daemon::start(
        dir.path(),
        &config(irc.port, admin, api_port, dir.path(), extra),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(30)).await;
    Bridge {
        irc,
        dir,
        daemon,
        api_port,
    }
}

async fn user(port: u16, nick: &str, channel: &str) -> IrcClient {
    let mut c = IrcClient::connect(port, nick).await;
    c.join(channel).await;
    c
}

#[tokio::test]
async fn irc_to_irc_reaches_linked_rooms_only_with_the_senders_name() {
    let b = start("").await;
    let mut alice = user(b.irc.port, "alice", "#a").await;
    let mut bob = user(b.irc.port, "bob", "#b").await;
    let mut carol = user(b.irc.port, "carol", "#c").await;

    alice.say("#a", "hello from a").await;
    let got = bob
        .next_message(WAIT)
        .await
        .expect("bob sees alice's message in #b");
    assert_eq!((got.nick.as_str(), got.target.as_str()), ("bridge", "#b"));
    assert_eq!(got.text, "<alice> hello from a");
    assert!(
        carol.next_message(QUIET).await.is_none(),
        "#c is not linked to #a and saw something"
    );

    alice.act("#a", "waves hello").await;
    let got = bob
        .next_message(WAIT)
        .await
        .expect("bob sees alice's action");
    assert_eq!(
        got.action(),
        Some("alice waves hello"),
        "got {:?}",
        got.text
    );

    // IRC formatting codes become plain text on the way.
    alice.say("#a", "\x02bold\x02 and \x0304red\x03").await;
    let got = bob.next_message(WAIT).await.expect("formatted message");
    assert_eq!(got.text, "<alice> bold and red");
}

#[tokio::test]
async fn api_and_irc_reach_each_other_and_long_text_arrives_intact() {
    let b = start("").await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut alice = user(b.irc.port, "alice", "#a").await;

    let (status, answer) = api
        .post(serde_json::json!({"text": "hi from the api", "username": "scripty", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("api-"))
    );
    let got = alice
        .next_message(WAIT)
        .await
        .expect("the API post reaches #a");
    assert_eq!(got.text, "<scripty> hi from the api");

    alice.say("#a", "hi from irc").await;
    let msg = stream
        .next(WAIT)
        .await
        .expect("the IRC message reaches the API stream");
    assert_eq!(msg["text"], "hi from irc");
    assert_eq!(msg["username"], "alice");
    assert_eq!(msg["gateway"], "lobby");
    assert_eq!(msg["account"], "irc.main");

    // 1,000 bytes of mixed-width UTF-8: split for IRC, joined back intact.
    let long = long_utf8_text();
    let (status, _) = api
        .post(serde_json::json!({"text": long, "username": "scripty", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    let expected = format!("<scripty> {long}");
    let pieces = alice
        .messages_until(WAIT, |got| {
            got.iter().map(|m| m.text.len()).sum::<usize>() >= expected.len()
        })
        .await;
    assert!(
        pieces.len() >= 3,
        "1,000 bytes need several IRC lines, got {}",
        pieces.len()
    );
    assert!(pieces.iter().all(|p| p.text.len() <= 510));
    let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(joined, expected);
}

#[tokio::test]
async fn an_api_reply_reaches_irc_as_a_quote_even_after_a_restart() {
    let mut b = start("").await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut alice = user(b.irc.port, "alice", "#a").await;

    alice.say("#a", "first question").await;
    let first = stream.next(WAIT).await.expect("reaches the API");
    let first_id = first["id"].as_str().expect("an id").to_owned();
    let (status, _) = api
        .post(serde_json::json!({"text": "an answer", "username": "scripty", "gateway": "lobby", "parent_id": first_id}))
        .await;
    assert_eq!(status, 200);
    let got = alice
        .next_message(WAIT)
        .await
        .expect("the reply reaches #a");
    assert_eq!(got.text, "<scripty> (re alice) an answer");

    alice.say("#a", "second question").await;
    let second = stream.next(WAIT).await.expect("reaches the API");
    let second_id = second["id"].as_str().expect("an id").to_owned();

    assert_eq!(b.daemon.stop(), Some(0), "clean exit on SIGTERM");
    b.daemon.restart();
    b.daemon.wait_ready(Duration::from_secs(30)).await;
    let (status, _) = api
        .post(serde_json::json!({"text": "late answer", "username": "scripty", "gateway": "lobby", "parent_id": second_id}))
        .await;
    assert_eq!(status, 200);
    let got = alice
        .next_message(WAIT)
        .await
        .expect("the reply reaches #a after the restart");
    assert_eq!(got.text, "<scripty> (re alice) late answer");
    let _ = &b.dir;
}

#[tokio::test]
async fn rights_keep_unwritable_accounts_unposted_and_unreadable_ones_out() {
    let extra = r##"
[accounts."api.readonly"]
kind = "api"
listen = "127.0.0.1:PORT_RO"
token = "readonly-token-0123456789"
rights = ["read"]

[accounts."api.writeonly"]
kind = "api"
listen = "127.0.0.1:PORT_WO"
token = "writeonly-token-0123456789"
rights = ["write"]

[[links]]
name = "rights"
rooms = [
  { account = "irc.main", room = "#r" },
  { account = "api.readonly", room = "r" },
  { account = "api.writeonly", room = "r" },
]
"##;
    let (ro, wo) = (free_port(), free_port());
    let extra = extra
        .replace("PORT_RO", &ro.to_string())
        .replace("PORT_WO", &wo.to_string());
    let b = start(&extra).await;
    let readonly = Api::new(ro, "readonly-token-0123456789");
    let writeonly = Api::new(wo, "writeonly-token-0123456789");
    let mut ro_stream = readonly.stream().await;
    let mut wo_stream = writeonly.stream().await;
    let mut dave = user(b.irc.port, "dave", "#r").await;

    // Read-only account: its posts enter, but nothing is posted to it.
    let (status, _) = readonly
        .post(serde_json::json!({"text": "from the reader", "username": "ro", "gateway": "r"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        dave.next_message(WAIT)
            .await
            .expect("read right lets it in")
            .text,
        "<ro> from the reader"
    );
    let wo_got = wo_stream
        .next(WAIT)
        .await
        .expect("the write-only account receives");
    assert_eq!(wo_got["text"], "from the reader");

    dave.say("#r", "to everyone allowed").await;
    assert_eq!(
        wo_stream.next(WAIT).await.expect("write-only receives")["text"],
        "to everyone allowed"
    );
    assert!(
        ro_stream.next(QUIET).await.is_none(),
        "an account without write was posted to"
    );

    // Write-only account: its posts are refused and reach no one.
    let (status, answer) = writeonly
        .post(serde_json::json!({"text": "should not pass", "username": "wo", "gateway": "r"}))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        dave.next_message(QUIET).await.is_none(),
        "an account without read fed the bus"
    );
    let m = b.daemon.metrics().await;
    assert!(
        metric(
            &m,
            "passerelle_drops_total",
            &["api.writeonly", "no_read_right"]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn bad_api_input_is_refused_clearly_and_the_daemon_keeps_running() {
    let mut b = start("").await;
    let api = Api::new(b.api_port, TOKEN);
    let mut alice = user(b.irc.port, "alice", "#a").await;

    let (status, answer) = api
        .post_raw(r#"{"text":"x","gateway":"lobby"}"#, "wrong-token")
        .await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = api.post_raw(r#"{"text": "unterminated"#, TOKEN).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed JSON")),
        "{answer}"
    );
    let (status, answer) = api
        .post_raw(r#"{"text": 42, "gateway": "lobby"}"#, TOKEN)
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = api
        .post_raw(r#"{"text": "x", "gateway": "nowhere"}"#, TOKEN)
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        alice.next_message(QUIET).await.is_none(),
        "a refused post reached IRC"
    );

    let (status, _) = api
        .post(serde_json::json!({"text": "still alive", "username": "s", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        alice.next_message(WAIT).await.expect("delivered").text,
        "<s> still alive"
    );
    assert!(b.daemon.running());
    let logs = b.daemon.logs();
    assert!(
        logs.contains("wrong token refused"),
        "no log line for the bad token"
    );
    assert!(
        logs.contains("malformed JSON refused"),
        "no log line for the malformed JSON"
    );
}

#[tokio::test]
async fn no_message_text_in_logs_metrics_or_the_store() {
    let mut b = start("").await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut alice = user(b.irc.port, "alice", "#a").await;
    let mut bob = user(b.irc.port, "bob", "#b").await;

    let from_irc = "canary-irc-7f3a9c";
    let from_api = "canary-api-52be1d";
    let edited = "canary-edit-90aa41";
    alice.say("#a", &format!("{from_irc} plain")).await;
    alice.act("#a", &format!("{from_irc} acts")).await;
    assert!(bob.next_message(WAIT).await.is_some());
    assert!(bob.next_message(WAIT).await.is_some());
    let first = stream.next(WAIT).await.expect("reaches the API");
    let (status, answer) = api
        .post(serde_json::json!({"text": from_api, "username": "s", "gateway": "lobby", "parent_id": first["id"]}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .post(serde_json::json!({"text": edited, "username": "s", "gateway": "lobby", "id": answer["id"]}))
        .await;
    assert_eq!(status, 200);
    // The reply and the edit (resent as a correction on IRC) arrive.
    let got = alice
        .messages_until(WAIT, |m| m.iter().any(|m| m.text.contains(edited)))
        .await;
    assert!(got.iter().any(|m| m.text.contains(from_api)));
    assert!(
        got.iter()
            .any(|m| m.text.contains(&format!("{edited} (edited)")))
    );

    let metrics = b.daemon.metrics().await;
    b.daemon.stop();
    let logs = b.daemon.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logs were not at the most verbose level"
    );
    for canary in [from_irc, from_api, edited] {
        assert!(
            !logs.contains(canary),
            "message text {canary} reached the log"
        );
        assert!(
            !metrics.contains(canary),
            "message text {canary} reached /metrics"
        );
        let leaked = files_containing(&b.dir.path().join("data"), canary);
        assert!(
            leaked.is_empty(),
            "message text {canary} left in {leaked:?}"
        );
    }
}

/// A server that completes registration, then sends garbage before one good line. ngIRCd only
/// relays well-formed lines, so this one is scripted; the daemon is the real binary.
#[tokio::test]
async fn malformed_irc_lines_are_logged_and_skipped_and_the_daemon_keeps_bridging() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let irc_port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let daemon = Daemon::start(
        dir.path(),
        &config(irc_port, admin, api_port, dir.path(), ""),
        admin,
    );
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the daemon connects")
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut expect = async |prefix: &str| loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line")
            .unwrap()
            .expect("open");
        if line.starts_with(prefix) {
            return line;
        }
    };
    expect("CAP LS").await;
    w.write_all(b":srv CAP * LS :\r\n").await.unwrap();
    expect("CAP END").await;
    w.write_all(b":srv 001 bridge :Welcome\r\n").await.unwrap();
    for chan in ["#a", "#b", "#c"] {
        w.write_all(format!(":bridge!b@h JOIN {chan}\r\n").as_bytes())
            .await
            .unwrap();
    }
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(api_port, TOKEN);
    let mut stream = api.stream().await;

    w.write_all(b"@broken-tags-only\r\n:prefix-only\r\n!!!\r\n:x!y@z PRIVMSG #a\r\n")
        .await
        .unwrap();
    w.write_all(b":x!y@z PRIVMSG #a :canary-malformed-\0nul\r\n")
        .await
        .unwrap();
    w.write_all(&[b'z'; 12_000]).await.unwrap();
    w.write_all(b"\r\n:alice!a@h PRIVMSG #a :after the garbage\r\n")
        .await
        .unwrap();
    let msg = stream.next(WAIT).await.expect("the good line is bridged");
    assert_eq!(msg["text"], "after the garbage");
    assert_eq!(msg["username"], "alice");

    let logs = daemon.logs();
    assert!(
        logs.contains("malformed line from the IRC server skipped"),
        "no warning for malformed lines"
    );
    assert!(
        logs.contains("oversized line from the IRC server skipped"),
        "no warning for the oversized line"
    );
    assert!(
        !logs.contains("canary-malformed"),
        "a malformed line's text reached the log"
    );
    assert!(
        !logs.contains("zzzzzzzz"),
        "an oversized line's text reached the log"
    );
    // PING still answered: the connection is alive.
    w.write_all(b"PING :alive\r\n").await.unwrap();
    assert_eq!(expect("PONG").await, "PONG alive");
}

#[tokio::test]
async fn the_delete_right_decides_whether_edits_and_deletes_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, src, del, nodel) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r##"
[store]
path = "{data}/p.db"
[http]
listen = "127.0.0.1:{admin}"
[accounts.src]
kind = "api"
listen = "127.0.0.1:{src}"
token = "{TOKEN}"
rights = ["read"]
[accounts.del]
kind = "api"
listen = "127.0.0.1:{del}"
token = "{TOKEN}"
rights = ["write", "delete"]
[accounts.nodel]
kind = "api"
listen = "127.0.0.1:{nodel}"
token = "{TOKEN}"
rights = ["write"]
[[links]]
name = "l"
rooms = [{{ account = "src", room = "g" }}, {{ account = "del", room = "g" }}, {{ account = "nodel", room = "g" }}]
"##,
        data = dir.path().display()
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let source = Api::new(src, TOKEN);
    let mut with_delete = Api::new(del, TOKEN).stream().await;
    let mut without = Api::new(nodel, TOKEN).stream().await;

    let (_, posted) = source
        .post(serde_json::json!({"text": "original", "username": "s", "gateway": "g"}))
        .await;
    let first_del = with_delete.next(WAIT).await.expect("delivered");
    let first_nodel = without.next(WAIT).await.expect("delivered");

    let (status, _) = source
        .post(serde_json::json!({"text": "changed", "username": "s", "gateway": "g", "id": posted["id"]}))
        .await;
    assert_eq!(status, 200);
    let edit = with_delete.next(WAIT).await.expect("the edit");
    assert_eq!(
        (edit["text"].as_str(), edit["id"].as_str()),
        (Some("changed"), first_del["id"].as_str())
    );
    let resent = without.next(WAIT).await.expect("the correction");
    assert_eq!(resent["text"], "changed (edited)");
    assert_ne!(
        resent["id"], first_nodel["id"],
        "an edit was applied without the delete right"
    );

    let (status, _) = source
        .post(serde_json::json!({"event": "msg_delete", "username": "s", "gateway": "g", "id": posted["id"]}))
        .await;
    assert_eq!(status, 200);
    let deleted = with_delete.next(WAIT).await.expect("the delete");
    assert_eq!(
        (deleted["event"].as_str(), deleted["id"].as_str()),
        (Some("msg_delete"), first_del["id"].as_str())
    );
    assert!(
        without.next(QUIET).await.is_none(),
        "a delete reached an account without the delete right"
    );
    let m = daemon.metrics().await;
    assert!(
        metric(&m, "passerelle_drops_total", &["nodel", "no_deletes"]) >= 1.0,
        "{m}"
    );
}

/// While a destination is down, what waits in the outbox is sealed: no message text in any file
/// of the data dir (the database and its WAL included). Once delivered, the rows are gone.
#[tokio::test]
async fn queued_messages_are_sealed_at_rest_and_gone_once_delivered() {
    let mut b = start("").await;
    let api = Api::new(b.api_port, TOKEN);
    b.irc.stop();
    let canaries: Vec<String> = (0..5).map(|i| format!("canary-queued-{i}-a81f")).collect();
    for c in &canaries {
        let body = serde_json::json!({"text": c, "username": "s", "gateway": "lobby"});
        assert_eq!(
            api.try_post(&body).await,
            Some(200),
            "acknowledged once stored"
        );
    }
    let m = b.daemon.metrics().await;
    assert!(
        metric(&m, "passerelle_queue_depth", &["irc.main"]) >= 5.0,
        "the messages are not waiting in the outbox, so this test would prove nothing:\n{m}"
    );
    let data = b.dir.path().join("data");
    for c in &canaries {
        let leaked = files_containing(&data, c);
        assert!(leaked.is_empty(), "queued text {c} in clear in {leaked:?}");
    }

    b.irc.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = b.daemon.metrics().await;
        if metric(&m, "passerelle_queue_depth", &["irc.main"]) == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered after the server came back:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.daemon.stop();
    for c in &canaries {
        let leaked = files_containing(&data, c);
        assert!(leaked.is_empty(), "delivered text {c} left in {leaked:?}");
    }
    assert!(
        !b.daemon.logs().contains("canary-queued"),
        "text in the log"
    );
    let store = rusqlite::Connection::open(data.join("passerelle.db")).expect("open the store");
    let rows: i64 = store
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .expect("count the outbox");
    assert_eq!(rows, 0, "delivered rows left in the outbox");
}

/// Odd input from both sides while normal traffic flows: invalid UTF-8 on IRC is decoded (Latin-1
/// fallback), an oversized API body, an unknown event kind and JSON of the wrong shape are refused
/// with a clear status; the daemon keeps running and the next messages go through untouched.
#[tokio::test]
async fn odd_input_is_refused_or_decoded_and_other_traffic_is_unaffected() {
    let mut b = start("").await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut alice = user(b.irc.port, "alice", "#a").await;

    // Not UTF-8: "café" in Latin-1, and bytes that are no character at all in UTF-8.
    alice.raw_bytes(b"PRIVMSG #a :caf\xe9 \xff\xfe ok").await;
    let got = stream.next(WAIT).await.expect("the line reaches the API");
    assert_eq!(got["text"], "caf\u{e9} \u{ff}\u{fe} ok");

    let huge =
        serde_json::json!({"text": "x".repeat(70 * 1024), "username": "s", "gateway": "lobby"});
    let (status, _) = api.post_raw(&huge.to_string(), TOKEN).await;
    assert_eq!(status, 413, "a body over max_body_bytes");
    let (status, answer) = api
        .post_raw(r#"{"text":"x","gateway":"lobby","event":"explode"}"#, TOKEN)
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("event: unknown")),
        "{answer}"
    );
    for wrong in [
        r#"["text","lobby"]"#,
        r#"{"text":{"a":1},"gateway":"lobby"}"#,
        "null",
    ] {
        let (status, answer) = api.post_raw(wrong, TOKEN).await;
        assert_eq!(status, 400, "{wrong}: {answer}");
    }
    assert!(
        alice.next_message(QUIET).await.is_none(),
        "a refused post reached IRC"
    );

    // Everything else goes on.
    alice.say("#a", "plain again").await;
    assert_eq!(
        stream.next(WAIT).await.expect("IRC to API")["text"],
        "plain again"
    );
    let (status, _) = api
        .post(serde_json::json!({"text": "still here", "username": "s", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        alice.next_message(WAIT).await.expect("API to IRC").text,
        "<s> still here"
    );
    assert!(b.daemon.running());
    assert!(!b.daemon.logs().contains("panicked"));
}

/// A 2,000-line paste from the API to IRC at IRC's default pace (2 lines a second after a burst
/// of 5): its first lines go out, each naming its sender, then a line with the count and a link
/// to the whole text; the next message follows at once. The account's server is written
/// `host:port`, as matterbridge configs write it.
#[tokio::test]
async fn a_long_paste_goes_to_irc_as_its_first_lines_and_a_link() {
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let config = format!(
        r##"
{head}
[accounts."irc.main"]
kind = "irc"
server = "127.0.0.1:{irc_port}"
tls = false
nick = "bridge"

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"

[pastes]
public_url = "http://127.0.0.1:{admin}"
keep_hours = 1

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc.main", room = "#a" }},
  {{ account = "api.main", room = "lobby" }},
]
"##,
        head = common::base_config(dir.path(), admin),
        irc_port = irc.port,
    );
    let mut daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let mut reader = user(irc.port, "reader", "#a").await;
    let api = Api::new(api_port, TOKEN);

    let paste: String = (1..=2000)
        .map(|i| format!("paste line {i} of a long log"))
        .collect::<Vec<_>>()
        .join("\n");
    let started = std::time::Instant::now();
    let (status, _) = api
        .post(serde_json::json!({"text": paste, "username": "mallory", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .post(
            serde_json::json!({"text": "the next message", "username": "bob", "gateway": "lobby"}),
        )
        .await;
    assert_eq!(status, 200);

    let got = reader
        .messages_until(Duration::from_secs(30), |got| {
            got.iter().any(|m| m.text.contains("the next message"))
        })
        .await;
    let next_after = started.elapsed();
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts.len(),
        7,
        "five lines, the link, the next message: {texts:?}"
    );
    for (i, text) in texts[..5].iter().enumerate() {
        assert_eq!(
            *text,
            format!("<mallory> paste line {} of a long log", i + 1)
        );
    }
    let note = texts[5];
    let prefix = format!("<mallory> … (1,995 more lines: http://127.0.0.1:{admin}/pastes/");
    assert!(note.starts_with(&prefix) && note.ends_with(')'), "{note}");
    assert_eq!(texts[6], "<bob> the next message");
    assert!(
        next_after < Duration::from_secs(10),
        "the next message waited {next_after:?}"
    );
    eprintln!("paste of 2,000 lines: the next message reached IRC after {next_after:?}");

    // The link serves the whole text, as plain text a browser won't run.
    let link = note
        .strip_prefix("<mallory> … (1,995 more lines: ")
        .and_then(|l| l.strip_suffix(')'))
        .expect("a link");
    let http = reqwest::Client::new();
    let answer = http.get(link).send().await.expect("the paste link answers");
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-security-policy"], "sandbox");
    assert_eq!(answer.text().await.unwrap(), paste);
    // A link with another signature, or another id, shows nothing.
    let (base, sig) = link.rsplit_once('/').unwrap();
    let forged_sig = format!("{base}/{}", "0".repeat(sig.len()));
    let (_, id) = base.rsplit_once('/').unwrap();
    let other_id = link.replace(id, &"f".repeat(id.len()));
    for forged in [forged_sig, other_id] {
        let r = http.get(&forged).send().await.unwrap();
        assert_eq!(r.status(), 404, "{forged}");
    }
    // The text is at rest only sealed, and never in the log.
    assert!(
        files_containing(&dir.path().join("data"), "paste line 1999").is_empty(),
        "the paste is sealed at rest"
    );
    assert!(!daemon.logs().contains("paste line"), "no text in the log");
    daemon.stop();
}
