//! Protocol behaviour that ngIRCd can't show us: a scripted server on loopback sends exactly the
//! lines a test needs (malformed input, silence, a SASL exchange) and checks what the connector
//! sends back. The conformance suite and the end-to-end tests use the real ngIRCd.

use passerelle_irc::IrcFactory;
use passerelle_sdk::{Connector, ConnectorError, ConnectorFactory, EventKind, MessageKind};
use passerelle_testkit::harness::Harness;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

struct Script {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Script {
    async fn accept(listener: &TcpListener) -> Self {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the connector connects")
            .expect("accept");
        let (r, w) = stream.into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// The next line the connector sends.
    async fn line(&mut self) -> String {
        let mut buf = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut buf))
            .await
            .expect("a line within 10 s")
            .expect("read");
        buf.trim_end().to_owned()
    }

    /// Reads lines until one starts with `prefix`; returns it.
    async fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line().await;
            assert!(
                !line.is_empty(),
                "connection closed while waiting for {prefix:?}"
            );
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Starts registration without capabilities and answers the first NICK with "in use".
    async fn first_nick_taken(&mut self) {
        self.expect("CAP LS").await;
        self.send(b":srv CAP * LS :\r\n").await;
        self.expect("NICK").await;
        self.send(b":srv 433 * bridge :Nickname is already in use\r\n")
            .await;
    }

    /// Completes registration without capabilities and joins `#chan`.
    async fn welcome(&mut self) {
        self.expect("CAP LS").await;
        self.send(b":srv CAP * LS :\r\n").await;
        self.expect("CAP END").await;
        self.send(b":srv 001 bridge :Welcome\r\n").await;
        self.expect("JOIN #chan").await;
        self.send(b":bridge!b@host JOIN #chan\r\n").await;
    }
}

fn connector(port: u16, extra: serde_json::Value) -> Box<dyn Connector> {
    let mut table = serde_json::json!({
        "server": "127.0.0.1", "port": port, "tls": false, "nick": "bridge", "send_rate_per_second": 0,
        "connect_timeout_secs": 5
    });
    if let (Some(t), Some(e)) = (table.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    let ctx = passerelle_sdk::BuildContext {
        account: "irc.test".into(),
        data_dir: std::env::temp_dir(),
    };
    match IrcFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("{issues:?}"),
    }
}

#[tokio::test]
async fn malformed_lines_are_skipped_and_the_connection_goes_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut h = Harness::start(
        connector(port, serde_json::json!({})),
        "irc.test",
        vec!["#chan".into()],
    );
    let mut s = Script::accept(&listener).await;
    s.welcome().await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);

    s.send(b"@unterminated-tags-without-command\r\n").await;
    s.send(b":prefix-only\r\n").await;
    s.send(b"!!! not a command\r\n").await;
    s.send(b":alice!a@h PRIVMSG #chan\r\n").await; // no text
    s.send(b":alice!a@h PRIVMSG #chan :nul\0inside\r\n").await;
    s.send(&[b'x'; 20_000]).await; // oversized, then its end
    s.send(b"\r\n").await;
    s.send(b":alice!a@h PRIVMSG #chan :caf\xe9 latin-1\r\n")
        .await;
    s.send(b":alice!a@h PRIVMSG #chan :\x01VERSION\x01\r\n")
        .await; // CTCP other than ACTION
    s.send(b":alice!a@h PRIVMSG bridge :a private message\r\n")
        .await; // never bridged
    s.send(b"@msgid=m-1;time=2026-01-02T03:04:05.000Z :alice!a@h PRIVMSG #chan :still here\r\n")
        .await;

    let first = h
        .next_event(Duration::from_secs(10))
        .await
        .expect("the latin-1 message");
    assert!(matches!(&first.kind, EventKind::Message(c) if c.text.as_str() == "café latin-1"));
    let second = h
        .next_event(Duration::from_secs(10))
        .await
        .expect("the tagged message");
    match &second.kind {
        EventKind::Message(c) => {
            assert_eq!(c.text.as_str(), "still here");
            assert_eq!(c.kind, MessageKind::Normal);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(second.remote_id.as_ref().map(|r| r.as_str()), Some("m-1"));
    assert_eq!(second.at.0, 1_767_323_045_000);
    assert!(
        h.next_event(Duration::from_millis(300)).await.is_none(),
        "something else was emitted"
    );

    // Still connected: it answers a PING.
    s.send(b"PING :still-there\r\n").await;
    assert_eq!(s.expect("PONG").await, "PONG still-there");
}

#[tokio::test]
async fn a_silent_server_is_a_dead_link() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = serde_json::json!({"ping_interval_secs": 1, "dead_link_secs": 2});
    let mut h = Harness::start(connector(port, extra), "irc.test", vec!["#chan".into()]);
    let mut s = Script::accept(&listener).await;
    s.welcome().await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);
    assert_eq!(s.expect("PING").await, "PING :passerelle");
    // No PONG: the link must be declared dead, as a retryable error.
    let ended = h
        .wait_finished(Duration::from_secs(10))
        .await
        .expect("the session ended within 10 s");
    match ended {
        Err(e @ ConnectorError::Disconnected(_)) => assert!(e.is_retryable()),
        other => panic!("expected a retryable disconnection, got {other:?}"),
    }
}

#[tokio::test]
async fn sasl_plain_is_negotiated_with_the_configured_account() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = serde_json::json!({"sasl_username": "acct", "sasl_password": "pw"});
    let mut h = Harness::start(connector(port, extra), "irc.test", vec!["#chan".into()]);
    let mut s = Script::accept(&listener).await;
    s.expect("CAP LS 302").await;
    s.send(b":srv CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL\r\n")
        .await;
    s.send(b":srv CAP * LS :message-tags server-time\r\n").await;
    let req = s.expect("CAP REQ").await;
    for cap in ["message-tags", "server-time", "multi-prefix", "sasl"] {
        assert!(req.contains(cap), "{req} lacks {cap}");
    }
    assert!(
        !req.contains("echo-message"),
        "requested a capability that was not offered: {req}"
    );
    s.send(b":srv CAP bridge ACK :message-tags server-time multi-prefix sasl\r\n")
        .await;
    s.expect("AUTHENTICATE PLAIN").await;
    s.send(b"AUTHENTICATE +\r\n").await;
    // base64("acct\0acct\0pw")
    assert_eq!(s.line().await, "AUTHENTICATE YWNjdABhY2N0AHB3");
    s.send(b":srv 903 bridge :SASL authentication successful\r\n")
        .await;
    s.expect("CAP END").await;
    s.send(b":srv 001 bridge :Welcome\r\n").await;
    s.expect("JOIN #chan").await;
    s.send(b":bridge!b@host JOIN #chan\r\n").await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_refused_sasl_login_stops_the_account() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = serde_json::json!({"sasl_username": "acct", "sasl_password": "wrong"});
    let mut h = Harness::start(connector(port, extra), "irc.test", vec!["#chan".into()]);
    let mut s = Script::accept(&listener).await;
    s.expect("CAP LS").await;
    s.send(b":srv CAP * LS :sasl\r\n").await;
    s.expect("CAP REQ").await;
    s.send(b":srv CAP bridge ACK :sasl\r\n").await;
    s.expect("AUTHENTICATE PLAIN").await;
    s.send(b"AUTHENTICATE +\r\n").await;
    s.line().await;
    s.send(b":srv 904 bridge :SASL authentication failed\r\n")
        .await;
    let result = h
        .wait_finished(Duration::from_secs(10))
        .await
        .expect("run ended");
    match result {
        Err(e @ ConnectorError::AuthRejected(_)) => assert!(!e.is_retryable()),
        other => panic!("expected AuthRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn nick_in_use_falls_back_and_channel_keys_are_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = serde_json::json!({"alt_nicks": ["bridge2"], "channel_keys": {"#Chan": "sesame"}});
    let mut h = Harness::start(connector(port, extra), "irc.test", vec!["#chan".into()]);
    let mut s = Script::accept(&listener).await;
    s.first_nick_taken().await;
    assert_eq!(s.expect("NICK").await, "NICK bridge2");
    s.send(b":srv 433 * bridge2 :Nickname is already in use\r\n")
        .await;
    assert_eq!(s.expect("NICK").await, "NICK bridge_");
    s.send(b":srv 001 bridge_ :Welcome\r\n").await;
    // Nothing is joined while the first nick may come free (it may be our previous connection,
    // still being closed): asked about every second, taken back once free.
    assert_eq!(s.expect("ISON").await, "ISON bridge");
    s.send(b":srv 303 bridge_ :bridge\r\n").await;
    let asked_again = std::time::Instant::now();
    assert_eq!(s.expect("ISON").await, "ISON bridge");
    assert!(asked_again.elapsed() >= Duration::from_millis(900));
    s.send(b":srv 303 bridge_ :\r\n").await;
    assert_eq!(s.expect("NICK").await, "NICK bridge");
    s.send(b":bridge_!b@host NICK :bridge\r\n").await;
    assert_eq!(s.expect("JOIN").await, "JOIN #chan sesame");
    s.send(b":bridge!b@host JOIN #chan\r\n").await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);
    // Our own messages (echo) are not emitted back.
    s.send(b":bridge!b@host PRIVMSG #chan :echo of ours\r\n")
        .await;
    assert!(h.next_event(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn a_nick_that_stays_taken_is_waited_for_only_reclaim_nick_secs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = serde_json::json!({"reclaim_nick_secs": 2});
    let mut h = Harness::start(connector(port, extra), "irc.test", vec!["#chan".into()]);
    let mut s = Script::accept(&listener).await;
    s.first_nick_taken().await;
    assert_eq!(s.expect("NICK").await, "NICK bridge_");
    s.send(b":srv 001 bridge_ :Welcome\r\n").await;
    let started = std::time::Instant::now();
    // The server never answers ISON: the session goes on after the wait, under bridge_.
    assert_eq!(s.expect("JOIN").await, "JOIN #chan");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    s.send(b":bridge_!b@host JOIN #chan\r\n").await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);
}

/// A connector with these extra keys, registered and in `#chan` on a scripted server.
async fn paced(extra: serde_json::Value) -> (Harness, Script) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut h = Harness::start(connector(port, extra), "irc.test", vec!["#chan".into()]);
    let mut s = Script::accept(&listener).await;
    s.welcome().await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);
    (h, s)
}

/// Sends one message of `n` lines (`line 0` …) to `#chan`; its answer.
fn send_numbered_lines(
    mut h: Harness,
    n: usize,
) -> tokio::task::JoinHandle<Option<Result<passerelle_sdk::Receipt, passerelle_sdk::SendError>>> {
    let text = (0..n)
        .map(|i| format!("line {i}"))
        .collect::<Vec<_>>()
        .join("\n");
    let event = passerelle_sdk::Event::new(
        "#chan",
        passerelle_sdk::Sender::new("x"),
        EventKind::Message(passerelle_sdk::Content::plain(text)),
    );
    tokio::spawn(async move { h.send(event, Duration::from_secs(20)).await })
}

#[tokio::test]
async fn outbound_lines_respect_the_rate_limit() {
    let (h, mut s) = paced(serde_json::json!({"send_rate_per_second": 5.0, "send_burst": 1})).await;
    // Six lines at five a second with a burst of one: at least a second between first and last.
    let sending = send_numbered_lines(h, 6);
    s.expect("PRIVMSG #chan :line 0").await;
    let first = std::time::Instant::now();
    for i in 1..6 {
        assert_eq!(s.line().await, format!("PRIVMSG #chan :line {i}"));
    }
    assert!(
        first.elapsed() >= Duration::from_millis(900),
        "six lines in {:?}",
        first.elapsed()
    );
    assert!(matches!(sending.await, Ok(Some(Ok(_)))));
}

#[tokio::test]
async fn a_ping_is_answered_while_a_long_message_goes_out() {
    let (h, mut s) = paced(serde_json::json!({"send_rate_per_second": 4.0, "send_burst": 1})).await;
    // Twelve lines at four a second: about three seconds of sending.
    let sending = send_numbered_lines(h, 12);
    s.expect("PRIVMSG #chan :line 0").await;
    s.send(b"PING :mid-paste\r\n").await;
    let mut lines_before_pong = 0;
    loop {
        let line = s.line().await;
        if line == "PONG :mid-paste" || line == "PONG mid-paste" {
            break;
        }
        assert!(line.starts_with("PRIVMSG #chan :line "), "{line}");
        lines_before_pong += 1;
    }
    assert!(
        lines_before_pong < 3,
        "the PING waited for {lines_before_pong} lines of the message"
    );
    // The rest of the message follows, in order, and the send is answered once it is all out.
    let mut rest = Vec::new();
    while rest.len() + lines_before_pong < 11 {
        rest.push(s.line().await);
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("PRIVMSG #chan :line 11")
    );
    assert!(matches!(sending.await, Ok(Some(Ok(_)))));
}
