//! End-to-end: the real `passerelle` binary between a real Synapse and a real ngIRCd.

#[path = "../common/mod.rs"]
mod common;

mod appservice;
mod bot;
mod portals;

use common::{Daemon, free_port};
use passerelle_matrix::testing::client::{MatrixUser, SeenEvent};
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::json;
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(20);
pub(crate) const BRIDGE: &str = "@bridge:hs.passerelle.test";

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
