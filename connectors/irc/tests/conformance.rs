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
    build(serde_json::json!({
        "server": "127.0.0.1", "port": port, "tls": false, "nick": "bridge",
        "send_rate_per_second": 0, "ping_interval_secs": 5, "dead_link_secs": 15
    }))
}

fn build(table: serde_json::Value) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "irc.test".into(),
        data_dir: std::env::temp_dir(),
    };
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

#[tokio::test]
async fn irc_passes_the_conformance_suite_over_tls() {
    let server = Ngircd::start_tls();
    let Some((tls_port, ca)) = server.tls.clone() else {
        panic!("no TLS port")
    };
    let mut client = IrcClient::connect(server.port, "peer").await;
    client.join("#tls").await;
    let mut peer = IrcPeer {
        client,
        channel: "#tls".into(),
    };
    let make = move || {
        build(serde_json::json!({
            "server": "127.0.0.1", "port": tls_port, "tls": true, "tls_ca_file": ca,
            "nick": "bridge", "send_rate_per_second": 0
        }))
    };
    conformance::run(&make, &mut peer, vec!["#tls".into()]).await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_as_a_retryable_error() {
    let server = Ngircd::start_tls();
    let Some((tls_port, _)) = server.tls.clone() else {
        panic!("no TLS port")
    };
    // The Mozilla roots do not include the throwaway CA.
    let connector = build(serde_json::json!({
        "server": "127.0.0.1", "port": tls_port, "tls": true, "nick": "bridge", "connect_timeout_secs": 5
    }));
    let mut h =
        passerelle_testkit::harness::Harness::start(connector, "irc.test", vec!["#x".into()]);
    let result = h
        .wait_finished(Duration::from_secs(10))
        .await
        .expect("run ended");
    match result {
        Err(e) => {
            assert!(e.is_retryable(), "{e}");
            assert!(e.to_string().contains("TLS handshake"), "{e}");
        }
        Ok(()) => panic!("connected to a server with an untrusted certificate"),
    }
}
