//! The shared conformance suite, run against the API connector over real HTTP on loopback.

use futures::future::BoxFuture;
use passerelle_api::ApiFactory;
use passerelle_sdk::{BuildContext, Connector, ConnectorFactory, RoomId, UserId};
use passerelle_testkit::conformance::{self, Peer, Seen};
use std::time::Duration;

const TOKEN: &str = "conformance-token-0123456789";

struct ApiPeer {
    http: reqwest::Client,
    base: String,
    stream: Option<reqwest::Response>,
    pending: String,
}

impl ApiPeer {
    async fn post(&self, body: serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/api/message", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("post reaches the API");
        assert!(
            response.status().is_success(),
            "post answered {}",
            response.status()
        );
    }
}

impl Peer for ApiPeer {
    fn room(&self) -> RoomId {
        "lobby".into()
    }
    fn unknown_room(&self) -> RoomId {
        "not-served".into()
    }
    fn user(&self) -> UserId {
        "peer".into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(
            self.post(serde_json::json!({"text": text, "username": "peer", "gateway": "lobby"})),
        )
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.post(
            serde_json::json!({"text": text, "username": "peer", "gateway": "lobby", "event": "user_action"}),
        ))
    }
    fn ready(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let response = self
                .http
                .get(format!("{}/api/stream", self.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("stream opens");
            assert!(
                response.status().is_success(),
                "stream answered {}",
                response.status()
            );
            self.stream = Some(response);
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut seen: Vec<Seen> = Vec::new();
            while seen.iter().map(|s| s.text.len()).sum::<usize>() < min_bytes {
                while let Some(pos) = self.pending.find('\n') {
                    let line: String = self.pending.drain(..=pos).collect();
                    let value: serde_json::Value =
                        serde_json::from_str(line.trim()).expect("stream lines are JSON");
                    let event = value["event"].as_str().unwrap_or("");
                    if event == "api_connected" {
                        continue;
                    }
                    seen.push(Seen {
                        text: value["text"].as_str().unwrap_or("").to_owned(),
                        emote: event == "user_action",
                    });
                }
                if seen.iter().map(|s| s.text.len()).sum::<usize>() >= min_bytes {
                    break;
                }
                let Some(stream) = self.stream.as_mut() else {
                    break;
                };
                match tokio::time::timeout_at(deadline, stream.chunk()).await {
                    Ok(Ok(Some(bytes))) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                    _ => break,
                }
            }
            seen
        })
    }
}

fn connector(port: u16) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "api.test".into(),
        data_dir: std::env::temp_dir(),
    };
    let table = serde_json::json!({"listen": format!("127.0.0.1:{port}"), "token": TOKEN});
    match ApiFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

#[tokio::test]
async fn api_passes_the_conformance_suite() {
    let port = passerelle_testkit::free_port();
    let mut peer = ApiPeer {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
        stream: None,
        pending: String::new(),
    };
    conformance::run(&move || connector(port), &mut peer, vec!["lobby".into()]).await;
}
