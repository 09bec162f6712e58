//! End-to-end: the real `passerelle` binary between the fake of Meta's Graph API and webhooks
//! (WhatsApp, Messenger, Instagram), a real ngIRCd and the HTTP message API.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_meta::testing::{
    FakeMeta, Product, messaging_body, messaging_text, whatsapp_body, whatsapp_text,
};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const GRAPH_TOKEN: &str = "EAAG-e2e-graph-token";
const SECRET: &str = "e2e-app-secret";
const VERIFY: &str = "e2e-verify";
const PHONE_ID: &str = "106540352242922";
const PAGE_ID: &str = "104455098451330";
const IG_ID: &str = "17841405822304914";
const ALICE: &str = "15551230001";
const BOB: &str = "15551230002";
const PSID: &str = "6254837461273845";
const IGSID: &str = "17841457234565432";
const WAIT: Duration = Duration::from_secs(20);

struct Bridge {
    fake: FakeMeta,
    irc: Ngircd,
    _dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
}

impl Bridge {
    fn hook(&self, account: &str) -> String {
        format!(
            "http://127.0.0.1:{}/hooks/{account}",
            self.daemon.admin_port
        )
    }
}

async fn start() -> Bridge {
    let fake = FakeMeta::start(GRAPH_TOKEN, SECRET).await;
    fake.add(Product::WhatsApp, PHONE_ID);
    fake.add(Product::Messenger, PAGE_ID);
    fake.add(Product::Instagram, IG_ID);
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let base = fake.api_base();
    let secrets = format!(
        "access_token = \"{GRAPH_TOKEN}\"\napp_secret = \"{SECRET}\"\nverify_token = \"{VERIFY}\"\napi_base = \"{base}\""
    );
    let config = format!(
        r##"
{head}
[accounts."wa"]
kind = "whatsapp"
phone_number_id = "{PHONE_ID}"
{secrets}

[accounts."fb"]
kind = "messenger"
page_id = "{PAGE_ID}"
{secrets}

[accounts."ig"]
kind = "instagram"
instagram_id = "{IG_ID}"
{secrets}

{irc_account}
{api_account}
[[links]]
name = "alice"
rooms = [
  {{ account = "wa", room = "{ALICE}" }},
  {{ account = "irc.main", room = "#alice" }},
  {{ account = "api.main", room = "alice" }},
]

[[links]]
name = "bob"
rooms = [
  {{ account = "wa", room = "{BOB}" }},
  {{ account = "irc.main", room = "#bob" }},
]

[[links]]
name = "fb"
rooms = [
  {{ account = "fb", room = "{PSID}" }},
  {{ account = "irc.main", room = "#fb" }},
  {{ account = "api.main", room = "fb" }},
]

[[links]]
name = "ig"
rooms = [
  {{ account = "ig", room = "{IGSID}" }},
  {{ account = "irc.main", room = "#ig" }},
  {{ account = "api.main", room = "ig" }},
]
"##,
        head = common::base_config(dir.path(), admin),
        irc_account = common::irc_account(irc.port),
        api_account = common::api_account(api_port, TOKEN),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    Bridge {
        fake,
        irc,
        _dir: dir,
        daemon,
        api_port,
    }
}

/// The sends the fake accepted to `to`, as (text, body).
fn sends_to(fake: &FakeMeta, to: &str) -> Vec<Value> {
    fake.sent()
        .into_iter()
        .map(|s| s.body)
        .filter(|b| {
            b.get("to").and_then(Value::as_str) == Some(to)
                || b.pointer("/recipient/id").and_then(Value::as_str) == Some(to)
        })
        .collect()
}

async fn wait_sends(fake: &FakeMeta, to: &str, n: usize) -> Vec<Value> {
    common::wait_for(WAIT, || sends_to(fake, to), |got| got.len() >= n).await
}

/// The next message the API stream carries in `gateway` (others, like IRC's lines in a link the
/// API shares, are passed over).
async fn api_message(stream: &mut common::ApiStream, gateway: &str) -> Value {
    loop {
        let m = stream.next(WAIT).await.expect("the API sees the message");
        if m["gateway"].as_str() == Some(gateway) && m["username"] != "ircer" {
            return m;
        }
    }
}

async fn irc_text(irc: &mut IrcClient, channel: &str) -> String {
    let m = irc
        .next_message(WAIT)
        .await
        .unwrap_or_else(|| panic!("IRC saw nothing in {channel}"));
    assert_eq!(m.target, channel, "the line arrived in another channel");
    m.text
}

#[tokio::test]
async fn whatsapp_messenger_and_instagram_reach_irc_and_the_api_and_back() {
    let b = start().await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    for c in ["#alice", "#bob", "#fb", "#ig"] {
        irc.join(c).await;
    }
    // Meta's subscription check reaches the daemon's hook.
    assert_eq!(
        b.fake.verify(&b.hook("wa"), VERIFY, "424242").await,
        (200, "424242".to_owned())
    );

    // WhatsApp: a signed webhook from Alice reaches #alice and the API's "alice" gateway.
    let body = whatsapp_body(
        PHONE_ID,
        &[(ALICE, "Alice Martin")],
        vec![whatsapp_text(ALICE, &b.fake.wamid(), "hello from whatsapp")],
    );
    assert_eq!(b.fake.deliver(&b.hook("wa"), &body).await, 200);
    assert_eq!(
        irc_text(&mut irc, "#alice").await,
        "<Alice Martin> hello from whatsapp"
    );
    let m = stream.next(WAIT).await.expect("the API sees it");
    assert_eq!(
        (
            m["text"].as_str(),
            m["username"].as_str(),
            m["gateway"].as_str()
        ),
        (
            Some("hello from whatsapp"),
            Some("Alice Martin"),
            Some("alice")
        )
    );
    // Bob writes too, so his window is open: the answer must still go to Alice alone.
    let body = whatsapp_body(
        PHONE_ID,
        &[(BOB, "Bob")],
        vec![whatsapp_text(BOB, &b.fake.wamid(), "bob here")],
    );
    assert_eq!(b.fake.deliver(&b.hook("wa"), &body).await, 200);
    assert_eq!(irc_text(&mut irc, "#bob").await, "<Bob> bob here");
    irc.say("#alice", "hi Alice, from irc").await;
    let to_alice = wait_sends(&b.fake, ALICE, 1).await;
    assert_eq!(
        to_alice,
        vec![
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": ALICE, "type": "text",
            "text": {"preview_url": false, "body": "<ircer> hi Alice, from irc"}})
        ]
    );
    let (status, _) = api
        .post(json!({"text": "and from the api", "username": "bot", "gateway": "alice"}))
        .await;
    assert_eq!(status, 200);
    let to_alice = wait_sends(&b.fake, ALICE, 2).await;
    assert_eq!(to_alice[1]["text"]["body"], "<bot> and from the api");
    assert_eq!(irc_text(&mut irc, "#alice").await, "<bot> and from the api");
    assert!(sends_to(&b.fake, BOB).is_empty(), "nothing went to Bob");

    // Messenger and Instagram webhooks carry ids only: names come from the profile APIs.
    b.fake
        .add_person(PSID, json!({"first_name": "Peter", "last_name": "Chang"}));
    b.fake.add_person(IGSID, json!({"username": "peter.chang"}));

    // Messenger.
    let body = messaging_body(
        Product::Messenger,
        PAGE_ID,
        vec![messaging_text(
            PSID,
            PAGE_ID,
            &b.fake.mid(),
            "hello from messenger",
        )],
    );
    assert_eq!(b.fake.deliver(&b.hook("fb"), &body).await, 200);
    assert_eq!(
        irc_text(&mut irc, "#fb").await,
        "<Peter Chang> hello from messenger"
    );
    let m = api_message(&mut stream, "fb").await;
    assert_eq!(m["text"].as_str(), Some("hello from messenger"));
    irc.say("#fb", "hi from irc").await;
    assert_eq!(
        wait_sends(&b.fake, PSID, 1).await,
        vec![
            json!({"recipient": {"id": PSID}, "messaging_type": "RESPONSE",
            "message": {"text": "<ircer> hi from irc"}})
        ]
    );

    // Instagram.
    let body = messaging_body(
        Product::Instagram,
        IG_ID,
        vec![messaging_text(
            IGSID,
            IG_ID,
            &b.fake.mid(),
            "hello from instagram",
        )],
    );
    assert_eq!(b.fake.deliver(&b.hook("ig"), &body).await, 200);
    assert_eq!(
        irc_text(&mut irc, "#ig").await,
        "<peter.chang> hello from instagram"
    );
    let m = api_message(&mut stream, "ig").await;
    assert_eq!(m["text"].as_str(), Some("hello from instagram"));
    irc.say("#ig", "hi from irc").await;
    assert_eq!(
        wait_sends(&b.fake, IGSID, 1).await,
        vec![json!({"recipient": {"id": IGSID}, "message": {"text": "<ircer> hi from irc"}})]
    );
}

#[tokio::test]
async fn forged_replayed_malformed_and_oversized_webhooks_change_nothing() {
    let mut b = start().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#alice").await;
    let hook = b.hook("wa");
    let body = whatsapp_body(
        PHONE_ID,
        &[(ALICE, "Alice")],
        vec![whatsapp_text(ALICE, &b.fake.wamid(), "forged?")],
    )
    .to_string();
    // Forged: signed with another secret, signed over another body, not signed at all.
    let other = FakeMeta::start(GRAPH_TOKEN, "not-the-app-secret").await;
    let wrong = other.signature(body.as_bytes());
    assert_eq!(
        b.fake
            .post_raw(&hook, body.as_bytes(), Some(Some(&wrong)))
            .await,
        401
    );
    let elsewhere = b.fake.signature(b"{}");
    assert_eq!(
        b.fake
            .post_raw(&hook, body.as_bytes(), Some(Some(&elsewhere)))
            .await,
        401
    );
    assert_eq!(
        b.fake.post_raw(&hook, body.as_bytes(), Some(None)).await,
        401
    );
    // Malformed but signed: not JSON, and JSON of the wrong shape.
    assert_eq!(b.fake.post_raw(&hook, b"{\"object\":", None).await, 400);
    assert_eq!(
        b.fake
            .post_raw(&hook, br#"{"object":"page","entry":[]}"#, None)
            .await,
        400
    );
    // Oversized: refused from its declared length, before any of it is read. The daemon answers
    // 413 and closes the connection; a client still sending its 5 MiB may see the connection
    // reset before it reads that answer (0 here). Either way nothing of it is bridged (the
    // next message is the first to arrive) and the daemon goes on.
    let huge = format!(
        r#"{{"object":"whatsapp_business_account","entry":[],"pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let status = b.fake.post_raw(&hook, huge.as_bytes(), None).await;
    assert!(
        status == 413 || status == 0,
        "an oversized hook answered {status}"
    );
    // A real message, then the same delivery replayed twice: bridged once.
    let real = whatsapp_body(
        PHONE_ID,
        &[(ALICE, "Alice")],
        vec![whatsapp_text(ALICE, &b.fake.wamid(), "only once")],
    );
    for _ in 0..3 {
        assert_eq!(b.fake.deliver(&hook, &real).await, 200);
    }
    let lines = irc.messages_until(Duration::from_secs(3), |_| false).await;
    let texts: Vec<&str> = lines.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        vec!["<Alice> only once"],
        "exactly one message reached IRC"
    );
    // The daemon is still up and still bridging.
    assert!(b.daemon.running());
    let after = whatsapp_body(
        PHONE_ID,
        &[(ALICE, "Alice")],
        vec![whatsapp_text(ALICE, &b.fake.wamid(), "still here")],
    );
    assert_eq!(b.fake.deliver(&hook, &after).await, 200);
    assert_eq!(irc_text(&mut irc, "#alice").await, "<Alice> still here");
    let logs = b.daemon.logs();
    assert!(logs.contains("missing or wrong signature"));
    for secret in [SECRET, GRAPH_TOKEN, "forged?", "only once"] {
        assert!(!logs.contains(secret), "the log holds {secret:?}");
    }
}

/// The head of a request, sent alone: what a client that announces a large body and sends none
/// sees. The status line of the answer, or `None` when none came within 3 s (the server waits
/// for the body).
async fn status_of_head_only(port: u16, head: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("listener up");
    s.write_all(head.as_bytes()).await.expect("head sent");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()?;
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn callbacks_are_refused_from_their_head_and_the_public_listener_serves_only_them() {
    let fake = FakeMeta::start(GRAPH_TOKEN, SECRET).await;
    fake.add(Product::WhatsApp, PHONE_ID);
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, public, api) = (free_port(), free_port(), free_port());
    let base = fake.api_base();
    let config = format!(
        r##"
{head}public_listen = "127.0.0.1:{public}"

[accounts."wa"]
kind = "whatsapp"
phone_number_id = "{PHONE_ID}"
access_token = "{GRAPH_TOKEN}"
app_secret = "{SECRET}"
verify_token = "{VERIFY}"
api_base = "{base}"

{api_account}
[[links]]
name = "alice"
rooms = [{{ account = "wa", room = "{ALICE}" }}, {{ account = "api.main", room = "alice" }}]
"##,
        head = common::base_config(dir.path(), admin),
        api_account = common::api_account(api, TOKEN),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;

    // 4 MB announced, no signature, no body sent: refused from the head alone.
    let unsigned = "POST /hooks/wa HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n";
    assert_eq!(
        status_of_head_only(public, unsigned).await.as_deref(),
        Some("HTTP/1.1 401 Unauthorized"),
        "the daemon waited for the body of a call without a signature"
    );
    // Signed (the signature covers the body, checked once read), but larger than a hook takes.
    let signed_big = format!(
        "POST /hooks/wa HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 4000000\r\n\r\n",
        "ab".repeat(32)
    );
    assert_eq!(
        status_of_head_only(public, &signed_big).await.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );
    // The message API too: no token, 60 KB announced.
    let api_head = "POST /api/message HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n";
    assert_eq!(
        status_of_head_only(api, api_head).await.as_deref(),
        Some("HTTP/1.1 401 Unauthorized")
    );

    // A real call still goes through the public listener.
    let mut stream = Api::new(api, TOKEN).stream().await;
    let body = whatsapp_body(
        PHONE_ID,
        &[(ALICE, "Alice")],
        vec![whatsapp_text(
            ALICE,
            &fake.wamid(),
            "through the public listener",
        )],
    );
    let hook = format!("http://127.0.0.1:{public}/hooks/wa");
    assert_eq!(fake.deliver(&hook, &body).await, 200);
    let seen = stream.next(WAIT).await.expect("bridged");
    assert_eq!(seen["text"], "through the public listener");

    // Each listener serves its own paths only.
    let get = |port: u16, path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move {
            reqwest::get(url)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(
        get(public, "/metrics").await,
        404,
        "metrics on the public listener"
    );
    assert_eq!(get(public, "/readyz").await, 404);
    assert_eq!(get(public, "/dead-letters").await, 404);
    assert_eq!(get(public, "/healthz").await, 200);
    assert_eq!(get(admin, "/metrics").await, 200);
    assert_eq!(
        get(admin, "/hooks/wa").await,
        404,
        "callbacks on the admin listener"
    );
    drop(daemon);
}
