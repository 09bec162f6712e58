//! End-to-end: the real `passerelle` binary between a real Synapse and a real ngIRCd (and the
//! fake of Discord).

#[path = "../common/mod.rs"]
mod common;

mod appservice;
mod bot;
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
