//! End-to-end: the real `passerelle` binary between a real Synapse and a real ngIRCd (and the
//! fakes of Discord, Slack and Mattermost).

#[path = "../common/mod.rs"]
mod common;

mod appservice;
mod bot;
mod cluster;
mod discord;
mod mattermost;
mod portals;
mod slack;

use common::{Daemon, free_port};
use passerelle_matrix::testing::client::{MatrixUser, SeenEvent};
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::json;
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(20);
pub(crate) const BRIDGE: &str = "@bridge:hs.passerelle.test";

/// Matches a notice from `bot` in the room `dm` that contains `want`.
pub(crate) fn notice(dm: &str, bot: &str, want: &'static str) -> impl Fn(&SeenEvent) -> bool {
    let (dm, bot) = (dm.to_owned(), bot.to_owned());
    move |e: &SeenEvent| {
        e.room == dm
            && e.sender() == bot
            && e.event["content"]["msgtype"] == "m.notice"
            && e.body().contains(want)
    }
}

/// The admins' watch, as both modes run it: `alice`'s direct chat `dm` with `bot` gets a
/// warning once IRC has been down past the delay, and an all-clear once it is back.
pub(crate) async fn irc_down_is_warned_and_back_is_told(
    alice: &mut MatrixUser,
    dm: &str,
    bot: &str,
    irc: &mut Ngircd,
    daemon: &Daemon,
) {
    let notice = |want: &'static str| notice(dm, bot, want);
    irc.stop();
    let warning = alice
        .next_matching(Duration::from_secs(30), notice("has been"))
        .await
        .unwrap_or_else(|| panic!("no warning; log:\n{}", daemon.logs()));
    assert!(
        warning.body().starts_with("irc (irc) has been"),
        "{}",
        warning.body()
    );
    irc.restart();
    alice
        .next_matching(Duration::from_secs(60), notice("connected again"))
        .await
        .unwrap_or_else(|| panic!("no all-clear; log:\n{}", daemon.logs()));
}

pub(crate) async fn irc_line(bob: &mut IrcClient, want: &str) -> String {
    let got = bob
        .messages_until(WAIT, |got| {
            got.iter()
                .any(|m| m.text.contains(want) || m.action().is_some_and(|a| a.contains(want)))
        })
        .await;
    got.iter()
        .find(|m| m.text.contains(want) || m.action().is_some_and(|a| a.contains(want)))
        .map(|m| {
            m.action()
                .map(|a| format!("* {a}"))
                .unwrap_or_else(|| m.text.clone())
        })
        .unwrap_or_else(|| panic!("IRC never saw {want:?}; saw {got:?}"))
}

pub(crate) async fn from_bridge(alice: &mut MatrixUser, room: &str, want: &str) -> SeenEvent {
    alice
        .next_matching(WAIT, |e| {
            e.room == room && e.sender() == BRIDGE && e.body().contains(want)
        })
        .await
        .unwrap_or_else(|| panic!("Matrix never saw {want:?} from the bridge"))
}

/// A real Synapse with `alice` ("Alice Liddell") in a room the bridge's bot joins, a real ngIRCd
/// with `bob` in `channel`, and the daemon linking both (as `lobby`) with one more account:
/// `account` is its TOML table, `account_room` its entry in the link's rooms.
pub(crate) struct Trio {
    /// Held so the homeserver, the IRC server and the daemon's directory last the whole test.
    pub _hs: Synapse,
    pub _irc: Ngircd,
    pub _dir: tempfile::TempDir,
    pub alice: MatrixUser,
    pub room: String,
    pub bob: IrcClient,
    pub daemon: Daemon,
}

pub(crate) async fn matrix_irc_and(channel: &str, account: &str, account_room: &str) -> Trio {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let irc = Ngircd::start();
    let alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    alice.set_display_name("Alice Liddell").await;
    let room = alice.create_room(json!({"invite": [BRIDGE]})).await;
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join(channel).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let admin = free_port();
    let config = format!(
        r##"
{head}
[accounts.irc]
kind = "irc"
server = "127.0.0.1"
port = {irc}
tls = false
nick = "bridge"
send_rate_per_second = 0

[accounts.matrix]
kind = "matrix"
mode = "bot"
homeserver = "{hs}"
user = "{BRIDGE}"
password = "bridge-pw"
rights = ["read", "write", "delete"]

{account}

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc", room = "{channel}" }},
  {{ account = "matrix", room = "{room}" }},
  {account_room},
]
"##,
        head = common::base_config(dir.path(), admin),
        irc = irc.port,
        hs = hs.url(),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice.wait_member(&room, BRIDGE, WAIT).await;
    Trio {
        _hs: hs,
        _irc: irc,
        _dir: dir,
        alice,
        room,
        bob,
        daemon,
    }
}
