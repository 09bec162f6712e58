//! An out-of-process connector through the real daemon: the reference program
//! (`connectors/process/examples/spool.py`, a directory of message files) linked with the HTTP
//! API, both ways, and killed mid-stream (the program, then the daemon, with SIGKILL): nothing
//! acknowledged is lost and nothing is bridged twice.

mod common;

use common::{Api, Daemon, base_config, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "process-test-token-0123";

fn config(dir: &Path, admin: u16, api_port: u16, irc_port: Option<u16>) -> String {
    // With IRC, the link is the files and an IRC channel: a person there sees each message as
    // it arrives, whatever happens to the daemon afterwards.
    let (irc, irc_room) = match irc_port {
        Some(port) => (
            common::irc_account(port),
            "  { account = \"irc.main\", room = \"#files\" },\n",
        ),
        None => (String::new(), ""),
    };
    let spool = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/connectors/process/examples/spool.py"
    );
    format!(
        r#"{head}
[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"

{irc}
[accounts."files.spool"]
kind = "process"
command = ["python3", "{spool}"]
env = {{ SPOOL_POLL_MS = "20" }}
capabilities = ["per_message_identity"]
shutdown_grace_secs = 2

[accounts."files.spool".settings]
dir = "{dir}/spool"

[[links]]
name = "lobby"
rooms = [
  {{ account = "api.main", room = "lobby" }},
  {{ account = "files.spool", room = "lobby" }},
{irc_room}]
"#,
        head = base_config(dir, admin),
        dir = dir.display(),
    )
}

fn folder(dir: &Path, kind: &str) -> PathBuf {
    dir.join("spool").join(kind).join("lobby")
}

/// Puts one message file into the spool's `in/lobby`, written aside and renamed into place.
fn drop_file(dir: &Path, n: usize, text: &str) {
    let folder = folder(dir, "in");
    std::fs::create_dir_all(&folder).expect("in/lobby");
    let body = serde_json::json!({"id": format!("file-{n:03}"), "sender": "ada", "text": text});
    let tmp = folder.join(format!(".{n:03}.tmp"));
    std::fs::write(&tmp, body.to_string()).expect("written");
    std::fs::rename(&tmp, folder.join(format!("{n:03}.json"))).expect("renamed");
}

fn files_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

async fn start(dir: &Path, irc_port: Option<u16>) -> (Daemon, Api) {
    let admin = free_port();
    let api_port = free_port();
    let daemon = Daemon::start(dir, &config(dir, admin, api_port, irc_port), admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(api_port, TOKEN);
    (daemon, api)
}

/// The program's PID once the daemon has started it.
async fn program(daemon: &Daemon) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = daemon.children().first() {
            return *pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the program was not started; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_reference_program_bridges_both_ways_through_the_daemon() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut daemon, api) = start(dir.path(), None).await;
    let mut stream = api.stream().await;
    program(&daemon).await;

    drop_file(dir.path(), 1, "from the files");
    let got = stream
        .next(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("nothing reached the API; log:\n{}", daemon.logs()));
    assert_eq!(got["text"], "from the files");
    assert_eq!(got["username"], "ada");
    assert_eq!(got["gateway"], "lobby");

    api.say("from the API", "bob", "lobby").await;
    let out = folder(dir.path(), "out");
    let written = common::wait_for(
        Duration::from_secs(20),
        || files_in(&out),
        |f| !f.is_empty(),
    )
    .await;
    assert_eq!(written.len(), 1, "{written:?}; log:\n{}", daemon.logs());
    let message: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(&written[0])).expect("the file"))
            .expect("JSON");
    assert_eq!(message["text"], "from the API");
    assert_eq!(
        message["name"], "bob",
        "per-message identity: the name, not a prefix"
    );
    assert!(
        files_in(&folder(dir.path(), "in")).is_empty(),
        "an emitted file stayed"
    );
    // The program's own log reached the daemon's, and no message text did.
    let logs = daemon.logs();
    assert!(logs.contains("program log"), "no program log line:\n{logs}");
    assert!(!logs.contains("from the files") && !logs.contains("from the API"));
    assert_eq!(daemon.stop(), Some(0));
    assert!(daemon.children().is_empty());
}

#[tokio::test]
async fn killing_the_program_or_the_daemon_mid_stream_loses_nothing_and_repeats_nothing() {
    const N: usize = 60;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ngircd = Ngircd::start();
    let mut irc = IrcClient::connect(ngircd.port, "reader").await;
    irc.join("#files").await;
    let (mut daemon, _api) = start(dir.path(), Some(ngircd.port)).await;
    program(&daemon).await;
    let writer = {
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            for i in 0..N {
                drop_file(&dir, i, &format!("file {i:03}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let collector = tokio::spawn(async move {
        let mut texts: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while tokio::time::Instant::now() < deadline {
            let Some(m) = irc.next_message(Duration::from_secs(20)).await else {
                break;
            };
            texts.push(m.text);
            let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
            if distinct.len() >= N {
                // A repeat may still be on its way.
                if let Some(extra) = irc.next_message(Duration::from_secs(2)).await {
                    texts.push(extra.text);
                }
                break;
            }
        }
        texts
    });
    // The program killed twice while files come in (each time once it is ready and at work),
    // then the daemon.
    for k in 1..=2 {
        let ready = common::wait_for(
            Duration::from_secs(30),
            || daemon.logs().matches("the program is ready").count(),
            |n| *n >= k,
        )
        .await;
        assert!(
            ready >= k,
            "the program was not ready again; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let pid = program(&daemon).await;
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    daemon.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(30)).await;
    writer.await.expect("the writer ran");
    let texts = collector.await.expect("the collector ran");
    let want: Vec<String> = (0..N).map(|i| format!("<ada> file {i:03}")).collect();
    let lost: Vec<&String> = want.iter().filter(|w| !texts.contains(w)).collect();
    assert!(
        lost.is_empty(),
        "lost {}: {lost:?}; log:\n{}",
        lost.len(),
        daemon.logs()
    );
    let repeats = texts.len() - want.len();
    assert_eq!(repeats, 0, "{repeats} bridged twice: {texts:?}");
    assert!(files_in(&folder(dir.path(), "in")).is_empty());
    let kills = daemon
        .logs()
        .matches("the program exited (signal: 9")
        .count();
    assert!(kills >= 2, "the program was killed {kills} times");
    daemon.stop();
}

/// A program that writes garbage: each malformed line is counted in
/// `passerelle_drops_total{reason="process_malformed_line"}`, logged without its content, and the
/// daemon and the program's session go on.
#[tokio::test]
async fn malformed_lines_from_a_program_are_counted_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("noisy.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nread init\necho '{\"type\":\"ready\",\"protocol\":1}'\n\
         echo 'secret words, not JSON'\necho '{\"type\":\"no_such_type\"}'\necho '[1,2]'\n\
         echo '{\"type\":\"status\",\"state\":\"connected\"}'\nwhile read line; do :; done\n",
    )
    .expect("written");
    let admin = free_port();
    let config = format!(
        "{head}\n[accounts.\"noisy\"]\nkind = \"process\"\ncommand = [\"sh\", \"{script}\"]\n",
        head = base_config(dir.path(), admin),
        script = script.display(),
    );
    let mut daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let mut drops = 0.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        drops = common::metric(
            &daemon.metrics().await,
            "passerelle_drops_total",
            &["account=\"noisy\"", "reason=\"process_malformed_line\""],
        );
        if drops >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(drops, 3.0, "log:\n{}", daemon.logs());
    let logs = daemon.logs();
    assert!(
        !logs.contains("secret words"),
        "a malformed line's content was logged"
    );
    assert!(daemon.running());
    assert_eq!(daemon.stop(), Some(0));
}

/// A reload that links one more room of the program's account: the running program gets a
/// `rooms` message and serves the room on the same run (it is not restarted).
#[tokio::test]
async fn a_reload_gives_the_running_program_its_new_room_without_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (admin, api_port) = (free_port(), free_port());
    let first = config(dir.path(), admin, api_port, None);
    let mut daemon = Daemon::start(dir.path(), &first, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(api_port, TOKEN);
    let mut stream = api.stream().await;
    let pid = program(&daemon).await;

    let second = format!(
        "{first}\n[[links]]\nname = \"second\"\nrooms = [\n  {{ account = \"api.main\", room = \"second\" }},\n  {{ account = \"files.spool\", room = \"second\" }},\n]\n"
    );
    daemon.rewrite(&second);
    daemon.reload_ok();
    let folder = dir.path().join("spool/in/second");
    common::wait_for(Duration::from_secs(20), || folder.is_dir(), |d| *d).await;
    assert!(
        folder.is_dir(),
        "the program never made the new room's folder"
    );
    let body = serde_json::json!({"id": "n-1", "sender": "ada", "text": "in the new room"});
    std::fs::write(folder.join(".1.tmp"), body.to_string()).expect("written");
    std::fs::rename(folder.join(".1.tmp"), folder.join("001.json")).expect("renamed");
    let got = stream
        .next(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("nothing reached the API; log:\n{}", daemon.logs()));
    assert_eq!(got["text"], "in the new room");
    assert_eq!(got["gateway"], "second");
    assert_eq!(program(&daemon).await, pid, "the program was restarted");
    assert_eq!(daemon.stop(), Some(0));
}
