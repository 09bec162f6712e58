//! End-to-end: the real `passerelle` binary between the fake of signal-cli's HTTP daemon, a real
//! ngIRCd and the HTTP message API.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_signal::testing::FakeSignalCli;
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const ME: &str = "+15550000000";
const ME_UUID: &str = "11111111-1111-4111-8111-111111111111";
const ADA: &str = "+15551112222";
const ADA_UUID: &str = "7ccae375-cd51-4c82-8b1e-7be3280aa485";
const BOB: &str = "+15553334444";
const GROUP: &str = "Pmpi+EfPWmsxiomLe9Nx2XF9HOE483p6iKiFj65iMwI=";
const WAIT: Duration = Duration::from_secs(20);

async fn sends(fake: &FakeSignalCli, n: usize) -> Vec<Value> {
    let probe = || -> Vec<Value> {
        fake.calls()
            .into_iter()
            .filter(|c| c.method == "send")
            .map(|c| c.params)
            .collect()
    };
    common::wait_for(WAIT, probe, |got| got.len() >= n).await
}

#[tokio::test]
async fn signal_direct_and_group_chats_reach_irc_and_the_api_and_back() {
    let fake = FakeSignalCli::start(ME, ME_UUID).await;
    fake.add_user(ADA, ADA_UUID);
    fake.add_user(BOB, "22222222-2222-4222-8222-222222222222");
    fake.add_group(GROUP, &[ME, ADA, BOB]);
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let config = format!(
        r##"
{head}
[accounts."signal"]
kind = "signal"
account = "{ME}"
url = "{url}"

{irc_account}
{api_account}
[[links]]
name = "ada"
rooms = [
  {{ account = "signal", room = "{ADA}" }},
  {{ account = "irc.main", room = "#ada" }},
  {{ account = "api.main", room = "ada" }},
]

[[links]]
name = "group"
rooms = [
  {{ account = "signal", room = "group:{GROUP}" }},
  {{ account = "irc.main", room = "#group" }},
]
"##,
        head = common::base_config(dir.path(), admin),
        url = fake.url(),
        irc_account = common::irc_account(irc.port),
        api_account = common::api_account(api_port, TOKEN),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut client = IrcClient::connect(irc.port, "ircer").await;
    client.join("#ada").await;
    client.join("#group").await;

    // Ada writes to the account directly: #ada and the API see it.
    fake.text_from(ADA, "hello from signal");
    let m = client.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(m.target, "#ada");
    assert!(m.text.ends_with("> hello from signal"), "{}", m.text);
    let a = stream.next(WAIT).await.expect("the API sees it");
    assert_eq!(
        (a["text"].as_str(), a["gateway"].as_str()),
        (Some("hello from signal"), Some("ada"))
    );
    // Bob writes in the group: only #group sees it.
    fake.group_text(BOB, GROUP, "hello group");
    let m = client.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(m.target, "#group");
    // The answers go back to the right conversation.
    client.say("#ada", "hi Ada").await;
    client.say("#group", "hi all").await;
    let got = sends(&fake, 2).await;
    assert_eq!(
        got,
        vec![
            json!({"recipient": [ADA], "message": "<ircer> hi Ada"}),
            json!({"groupId": GROUP, "message": "<ircer> hi all"}),
        ]
    );
    // A drop of the event stream loses nothing.
    fake.drop_streams();
    fake.text_from(ADA, "while the stream was down");
    let m = client
        .next_message(WAIT)
        .await
        .expect("IRC sees it after the reconnect");
    assert!(
        m.text.ends_with("> while the stream was down"),
        "{}",
        m.text
    );
}
