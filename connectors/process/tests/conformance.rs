//! The conformance suite through the process connector and the reference program
//! (`examples/spool.py`, run by the system's `python3`), and the connector's own behaviour with
//! programs that misbehave: malformed and over-long lines, a wrong protocol version, missing
//! capabilities, a program that dies mid-send.

use futures::future::BoxFuture;
use passerelle_process::ProcessFactory;
use passerelle_sdk::{
    BuildContext, Connector, ConnectorError, ConnectorFactory, Content, Event, EventKind, RoomId,
    SendError, Sender, UserId,
};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::Harness;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const SPOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spool.py");

fn build(table: Value, dir: &Path) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "conformance.account".into(),
        data_dir: dir.join("account"),
    };
    match ProcessFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

fn spool_table(dir: &Path) -> Value {
    json!({
        "command": ["python3", SPOOL],
        "env": {"SPOOL_POLL_MS": "20"},
        "capabilities": ["replies", "per_message_identity"],
        "settings": {"dir": dir.join("spool")},
    })
}

/// A person using the spool: drops files into `in/general/` and reads `out/general/`.
struct SpoolPeer {
    dir: PathBuf,
    written: usize,
    read: Vec<String>,
}

impl SpoolPeer {
    fn folder(&self, kind: &str) -> PathBuf {
        self.dir.join("spool").join(kind).join("general")
    }

    fn drop_file(&mut self, text: &str, emote: bool) {
        self.written += 1;
        let folder = self.folder("in");
        std::fs::create_dir_all(&folder).expect("in/");
        let body = json!({"id": format!("peer-{}", self.written), "sender": "alice",
                          "name": "Alice", "text": text, "emote": emote});
        let tmp = folder.join(format!(".{}.tmp", self.written));
        std::fs::write(&tmp, body.to_string()).expect("written");
        std::fs::rename(&tmp, folder.join(format!("{:06}.json", self.written))).expect("renamed");
    }

    /// The files in `out/general/` not read before.
    fn new_messages(&mut self) -> Vec<Value> {
        let mut names: Vec<String> = std::fs::read_dir(self.folder("out"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if self.read.contains(&name) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(self.folder("out").join(&name)) else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                self.read.push(name);
                out.push(v);
            }
        }
        out
    }
}

impl Peer for SpoolPeer {
    fn room(&self) -> RoomId {
        "general".into()
    }
    fn unknown_room(&self) -> RoomId {
        "elsewhere".into()
    }
    fn user(&self) -> UserId {
        "alice".into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.drop_file(text, false) })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.drop_file(text, true) })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut seen: Vec<Seen> = Vec::new();
            while seen.iter().map(|s| s.text.len()).sum::<usize>() < min_bytes
                && tokio::time::Instant::now() < deadline
            {
                for m in self.new_messages() {
                    seen.push(Seen {
                        text: m["text"].as_str().unwrap_or_default().to_owned(),
                        emote: m["emote"] == true,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    }
}

#[tokio::test]
async fn the_reference_program_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut peer = SpoolPeer {
        dir: dir.path().to_owned(),
        written: 0,
        read: Vec::new(),
    };
    let make = || build(spool_table(dir.path()), dir.path());
    conformance::run(&make, &mut peer, vec!["general".into()]).await;
    // What the program emitted was answered, and so taken out of in/.
    let left: Vec<_> = std::fs::read_dir(peer.folder("in"))
        .expect("in/")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "files left in in/: {}", left.len());
}

fn outbound(room: &str, text: &str) -> Event {
    Event::new(
        room,
        Sender::new("bob"),
        EventKind::Message(Content::plain(text)),
    )
}

/// The connector on `table`, running in a harness in the room `general`.
fn harness(table: Value, dir: &Path) -> Harness {
    Harness::start(
        build(table, dir),
        "conformance.account",
        vec!["general".into()],
    )
}

/// The start of a test program that shakes hands and reports itself connected.
const CONNECTED: &str = r#"read init
echo '{"type":"ready","protocol":1}'
echo '{"type":"status","state":"connected"}'
"#;

/// A program written in the test, as a shell script speaking the protocol badly or well.
fn script(dir: &Path, body: &str) -> Value {
    let path = dir.join("program.sh");
    // It works in the test's directory (the daemon starts programs in its own).
    let script = format!("#!/bin/sh\ncd '{}' || exit 9\n{body}\n", dir.display());
    std::fs::write(&path, script).expect("written");
    json!({"command": ["sh", path], "start_timeout_secs": 3, "send_timeout_secs": 2,
           "shutdown_grace_secs": 1, "max_line_bytes": 4096})
}

#[tokio::test]
async fn malformed_and_over_long_lines_are_skipped_and_the_session_goes_on() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The program says nonsense, a line over max_line_bytes, an unknown type and an event that
    // does not parse, then emits a good one.
    let long = "x".repeat(10_000);
    let body = format!(
        r#"read init
echo '{{"type":"ready","protocol":1}}'
echo 'not json at all'
echo '{long}'
echo '{{"type":"frobnicate"}}'
echo '{{"type":"emit","id":"bad","event":{{"room":"general"}}}}'
echo '{{"type":"status","state":"connected"}}'
echo '{{"type":"emit","id":"1","event":{{"room":"general","sender":{{"id":"alice"}},"remote_id":"m1","kind":{{"message":{{"text":"after the noise"}}}}}}}}'
while read line; do
  case "$line" in
    *'"id":"bad"'*'"result":"invalid"'*) echo "$line" > invalid-answer ;;
    *'"id":"1"'*'"result":"stored"'*) echo "$line" > stored-answer ;;
  esac
done"#
    );
    let table = script(dir.path(), &body);
    let mut h = harness(table, dir.path());
    assert!(h.wait_connected(WAIT).await, "never connected");
    let event = h
        .next_event(WAIT)
        .await
        .expect("the good emit after the noise");
    assert_eq!(
        event.content().map(|c| c.text.as_str()),
        Some("after the noise")
    );
    for answer in ["invalid-answer", "stored-answer"] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !dir.path().join(answer).exists() {
            assert!(tokio::time::Instant::now() < deadline, "no {answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(h.finished().await.is_none(), "the session ended");
    assert_eq!(h.shutdown(WAIT).await.map(|r| r.is_ok()), Some(true));
}

#[tokio::test]
async fn a_program_that_dies_mid_send_has_the_send_answered_disconnected() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let table = script(dir.path(), &[CONNECTED, "read send\nexit 3"].concat());
    let mut h = harness(table, dir.path());
    assert!(h.wait_connected(WAIT).await);
    assert_eq!(
        h.send(outbound("general", "lost?"), WAIT).await,
        Some(Err(SendError::Disconnected)),
        "a send the program took and never answered is retried"
    );
    match h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::Disconnected(why))) => assert!(why.contains("exited"), "{why}"),
        other => panic!("run returned {other:?}"),
    }
}

#[tokio::test]
async fn a_program_that_never_answers_a_send_has_it_timed_out() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let table = script(
        dir.path(),
        &[CONNECTED, "while read line; do :; done"].concat(),
    );
    let mut h = harness(table, dir.path());
    assert!(h.wait_connected(WAIT).await);
    assert_eq!(
        h.send(outbound("general", "anyone?"), WAIT).await,
        Some(Err(SendError::Disconnected))
    );
    assert_eq!(
        h.send(outbound("elsewhere", "not ours"), WAIT).await,
        Some(Err(SendError::RoomNotFound))
    );
    assert_eq!(h.shutdown(WAIT).await.map(|r| r.is_ok()), Some(true));
}

#[tokio::test]
async fn a_wrong_version_or_missing_capabilities_end_the_session_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let table = script(
        dir.path(),
        r#"read init
echo '{"type":"ready","protocol":2}'
while read line; do :; done"#,
    );
    let mut h = harness(table, dir.path());
    match h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::Fatal(why))) => {
            assert!(
                why.contains("version 2") && why.contains("speaks 1"),
                "{why}"
            );
        }
        other => panic!("run returned {other:?}"),
    }

    let mut table = script(
        dir.path(),
        r#"read init
echo '{"type":"ready","protocol":1,"capabilities":{"edits":true}}'
while read line; do :; done"#,
    );
    table["capabilities"] = json!(["edits", "reactions"]);
    let mut h = harness(table, dir.path());
    match h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::Config(why))) => {
            assert!(
                why.contains("capabilities") && why.contains("reactions"),
                "{why}"
            );
            assert!(!why.contains("edits"), "{why}");
        }
        other => panic!("run returned {other:?}"),
    }

    // A program that can't be started is named by its key.
    let table = json!({"command": ["/nonexistent/program"]});
    let mut h = harness(table, dir.path());
    match h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::Config(why))) => assert!(why.contains("command[0]"), "{why}"),
        other => panic!("run returned {other:?}"),
    }
}

#[tokio::test]
async fn the_program_gets_no_environment_but_path_lang_and_its_own() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut table = script(
        dir.path(),
        r#"read init
env | cut -d= -f1 | sort > env-names
echo '{"type":"ready","protocol":1}'
echo '{"type":"status","state":"connected"}'
while read line; do :; done"#,
    );
    table["env"] = json!({"MY_SETTING": "1"});
    let mut h = harness(table, dir.path());
    assert!(h.wait_connected(WAIT).await);
    let names = std::fs::read_to_string(dir.path().join("env-names")).expect("env-names");
    let names: Vec<&str> = names
        .lines()
        .filter(|n| !matches!(*n, "PWD" | "SHLVL" | "_" | "OLDPWD"))
        .collect();
    assert_eq!(names, ["LANG", "MY_SETTING", "PATH"]);
    assert_eq!(h.shutdown(WAIT).await.map(|r| r.is_ok()), Some(true));
}

#[tokio::test]
async fn state_is_kept_for_the_program_and_bounded() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let long_key = "k".repeat(300);
    let table = script(
        dir.path(),
        &format!(
            r#"read init
echo '{{"type":"ready","protocol":1}}'
echo '{{"type":"state_get","id":"g0","key":"cursor"}}'
read before; echo "$before" > before
echo '{{"type":"state_put","id":"p","key":"cursor","value":"42"}}'
read saved; echo "$saved" > saved
echo '{{"type":"state_get","id":"g","key":"cursor"}}'
read got; echo "$got" > got
echo '{{"type":"state_put","id":"big","key":"{long_key}","value":"x"}}'
read refused; echo "$refused" > refused
echo '{{"type":"status","state":"connected"}}'
while read line; do :; done"#
        ),
    );
    let mut h = harness(table, dir.path());
    assert!(h.wait_connected(WAIT).await);
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        serde_json::from_str(text.trim()).unwrap_or(Value::Null)
    };
    assert_eq!(
        read("before"),
        json!({"type": "state", "id": "g0", "value": null})
    );
    assert_eq!(read("saved"), json!({"type": "state_saved", "id": "p"}));
    assert_eq!(
        read("got"),
        json!({"type": "state", "id": "g", "value": "42"})
    );
    assert_eq!(read("refused")["error"], "key or value too long");
    // Kept in the account's state, where a restarted program finds it.
    assert_eq!(
        h.state().get_text("cursor").await.ok().flatten().as_deref(),
        Some("42")
    );
    assert_eq!(h.shutdown(WAIT).await.map(|r| r.is_ok()), Some(true));
}

#[tokio::test]
async fn a_program_that_does_not_read_its_stdin_ends_its_session_without_stalling_the_daemon() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // It asks for state 20,000 times and reads none of the answers.
    let table = script(
        dir.path(),
        &[
            CONNECTED,
            r#"yes '{"type":"state_get","id":"x","key":"k"}' | head -n 20000
sleep 30"#,
        ]
        .concat(),
    );
    let mut h = harness(table, dir.path());
    match h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::Disconnected(why))) => {
            assert!(why.contains("unread"), "{why}");
        }
        other => panic!("run returned {other:?}"),
    }
}
