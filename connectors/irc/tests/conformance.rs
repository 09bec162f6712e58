//! The shared conformance suite, run against a real ngIRCd on loopback.

use futures::future::BoxFuture;
use passerelle_irc::IrcFactory;
use passerelle_sdk::{BuildContext, Connector, ConnectorFactory, RoomId, UserId};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use std::time::Duration;

struct IrcPeer {
    client: IrcClient,
    channel: String,
}

impl Peer for IrcPeer {
    fn room(&self) -> RoomId {
        self.channel.as_str().into()
    }
    fn unknown_room(&self) -> RoomId {
        "#not-served".into()
    }
    fn user(&self) -> UserId {
        self.client.nick.as_str().into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.client.say(&self.channel, text).await })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.client.act(&self.channel, text).await })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        Box::pin(async move {
            let got = self
                .client
                .messages_until(timeout, |got| {
                    got.iter()
                        .map(|m| m.action().unwrap_or(&m.text).len())
                        .sum::<usize>()
                        >= min_bytes
                })
                .await;
            got.iter()
                .map(|m| Seen {
                    text: m.action().unwrap_or(&m.text).to_owned(),
                    emote: m.action().is_some(),
                })
                .collect()
        })
    }
}

fn connector(port: u16) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "irc.test".into(),
        data_dir: std::env::temp_dir(),
    };
    let table = serde_json::json!({
        "server": "127.0.0.1", "port": port, "tls": false, "nick": "bridge",
        "send_rate_per_second": 0, "ping_interval_secs": 5, "dead_link_secs": 15
    });
    match IrcFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

#[tokio::test]
async fn irc_passes_the_conformance_suite_against_ngircd() {
    let server = Ngircd::start();
    let mut client = IrcClient::connect(server.port, "peer").await;
    client.join("#conformance").await;
    let mut peer = IrcPeer {
        client,
        channel: "#conformance".into(),
    };
    let port = server.port;
    conformance::run(
        &move || connector(port),
        &mut peer,
        vec!["#conformance".into()],
    )
    .await;
}
