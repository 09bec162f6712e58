//! The conformance suite and the Meta connectors' own behaviour, against the faithful fake of
//! Meta's Graph API and webhook deliveries (`passerelle_meta::testing`).

use futures::future::BoxFuture;
use passerelle_meta::kind::Kind;
use passerelle_meta::testing::{
    self as fake, FakeMeta, Product, messaging_body, messaging_text, whatsapp_body, whatsapp_text,
};
use passerelle_meta::{INSTAGRAM, MESSENGER, MetaFactory, WHATSAPP};
use passerelle_sdk::{
    Attachment, BuildContext, Connector, ConnectorError, ConnectorFactory, Content, Event,
    EventKind, RoomId, SendError, Sender, Text, UserId,
};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::Harness;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "EAAG-conformance-token";
const SECRET: &str = "app-secret-0123456789";
const VERIFY: &str = "verify-token-42";
const PHONE_ID: &str = "106540352242922";
const PAGE_ID: &str = "104455098451330";
const IG_ID: &str = "17841405822304914";
const PERSON: &str = "15551234567";
const ACCOUNT: &str = "conformance.account";

fn product(kind: Kind) -> Product {
    match kind {
        Kind::WhatsApp => Product::WhatsApp,
        Kind::Messenger => Product::Messenger,
        Kind::Instagram => Product::Instagram,
    }
}

fn business(kind: Kind) -> &'static str {
    match kind {
        Kind::WhatsApp => PHONE_ID,
        Kind::Messenger => PAGE_ID,
        Kind::Instagram => IG_ID,
    }
}

fn factory(kind: Kind) -> &'static MetaFactory {
    match kind {
        Kind::WhatsApp => &WHATSAPP,
        Kind::Messenger => &MESSENGER,
        Kind::Instagram => &INSTAGRAM,
    }
}

fn table(kind: Kind, fake: &FakeMeta, extra: Value) -> Value {
    let id_key = match kind {
        Kind::WhatsApp => "phone_number_id",
        Kind::Messenger => "page_id",
        Kind::Instagram => "instagram_id",
    };
    let mut t = json!({
        id_key: business(kind),
        "access_token": TOKEN,
        "app_secret": SECRET,
        "verify_token": VERIFY,
        "api_base": fake.api_base(),
        "request_timeout_secs": 10,
    });
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    t
}

fn build(kind: Kind, table: Value, data_dir: &std::path::Path) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: ACCOUNT.into(),
        data_dir: data_dir.to_owned(),
    };
    match factory(kind).build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

/// A person writing to the business on one of the three networks.
struct MetaPeer {
    kind: Kind,
    fake: std::sync::Arc<FakeMeta>,
    port: u16,
    seen: usize,
}

impl MetaPeer {
    fn hook(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/{ACCOUNT}", self.port)
    }

    async fn write(&mut self, text: &str) {
        let body = match self.kind {
            Kind::WhatsApp => whatsapp_body(
                PHONE_ID,
                &[(PERSON, "Peer Person")],
                vec![whatsapp_text(PERSON, &self.fake.wamid(), text)],
            ),
            k => messaging_body(
                product(k),
                business(k),
                vec![messaging_text(PERSON, business(k), &self.fake.mid(), text)],
            ),
        };
        let status = self.fake.deliver(&self.hook(), &body).await;
        assert_eq!(status, 200, "the hook answered {status}");
    }
}

/// The text of a send, when it is one.
fn sent_text(kind: Kind, body: &Value) -> Option<String> {
    let text = match kind {
        Kind::WhatsApp => body.pointer("/text/body"),
        _ => body.pointer("/message/text"),
    };
    text.and_then(Value::as_str).map(str::to_owned)
}

fn sent_to(kind: Kind, body: &Value) -> Option<&str> {
    match kind {
        Kind::WhatsApp => body.get("to"),
        _ => body.pointer("/recipient/id"),
    }
    .and_then(Value::as_str)
}

impl Peer for MetaPeer {
    fn room(&self) -> RoomId {
        PERSON.into()
    }
    fn unknown_room(&self) -> RoomId {
        "15559999999".into()
    }
    fn user(&self) -> UserId {
        PERSON.into()
    }
    fn http_port(&self) -> Option<u16> {
        Some(self.port)
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.write(text))
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.write(&format!("/me {text}")).await })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        let (fake, kind) = (self.fake.clone(), self.kind);
        let seen = &mut self.seen;
        Box::pin(conformance::collect_sent(min_bytes, timeout, move || {
            let sent = fake.sent();
            let new = sent[*seen..]
                .iter()
                .filter(|s| sent_to(kind, &s.body) == Some(PERSON))
                .filter_map(|s| sent_text(kind, &s.body))
                .collect();
            *seen = sent.len();
            new
        }))
    }
}

async fn start_fake(kind: Kind) -> std::sync::Arc<FakeMeta> {
    let fake = FakeMeta::start(TOKEN, SECRET).await;
    fake.add(product(kind), business(kind));
    std::sync::Arc::new(fake)
}

async fn conformance_for(kind: Kind) {
    let fake = start_fake(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let t = table(kind, &fake, json!({}));
    let path = dir.path().to_owned();
    let make = move || build(kind, t.clone(), &path);
    let mut peer = MetaPeer {
        kind,
        fake: fake.clone(),
        port: passerelle_testkit::free_port(),
        seen: 0,
    };
    conformance::run(&make, &mut peer, vec![PERSON.into()]).await;
}

#[tokio::test]
async fn whatsapp_passes_the_conformance_suite() {
    conformance_for(Kind::WhatsApp).await;
}

#[tokio::test]
async fn messenger_passes_the_conformance_suite() {
    conformance_for(Kind::Messenger).await;
}

#[tokio::test]
async fn instagram_passes_the_conformance_suite() {
    conformance_for(Kind::Instagram).await;
}

/// A running connector with its hook served on a loopback port.
struct Running {
    h: Harness,
    fake: std::sync::Arc<FakeMeta>,
    hook: String,
    base: String,
    _dir: tempfile::TempDir,
}

async fn running(kind: Kind, extra: Value) -> Running {
    let fake = start_fake(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let mut extra = extra;
    if extra.get("media_public_url").is_some() {
        extra["media_public_url"] = json!(format!("http://127.0.0.1:{port}"));
    }
    let connector = build(kind, table(kind, &fake, extra), dir.path());
    let mut h = Harness::start(connector, ACCOUNT, vec![PERSON.into()]);
    h.serve_http(port).await;
    assert!(h.wait_connected(Duration::from_secs(10)).await);
    Running {
        h,
        fake,
        hook: format!("http://127.0.0.1:{port}/hooks/{ACCOUNT}"),
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn out(kind: EventKind) -> Event {
    let mut sender = Sender::new("alice");
    sender.display_name = Some("alice".into());
    Event::new(PERSON, sender, kind)
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn whatsapp_sends_are_exactly_the_documented_payloads() {
    let mut r = running(Kind::WhatsApp, json!({"media_fetch_private": true})).await;
    r.fake.set_last_inbound(PHONE_ID, PERSON, Some(60_000));
    // A reply, a reaction and its removal, and a file that is uploaded first.
    let mut reply = out(EventKind::Message(Content::plain("<alice> hello")));
    reply.reply_to = Some("wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUY".into());
    let id =
        r.h.send(reply, WAIT)
            .await
            .unwrap()
            .unwrap()
            .remote_id
            .unwrap();
    assert!(id.as_str().starts_with("wamid."));
    r.h.send(
        out(EventKind::Reaction {
            target: "wamid.target".into(),
            key: Text::new("👍"),
            removed: false,
        }),
        WAIT,
    )
    .await
    .unwrap()
    .unwrap();
    r.h.send(
        out(EventKind::Reaction {
            target: "wamid.target".into(),
            key: Text::new("👍"),
            removed: true,
        }),
        WAIT,
    )
    .await
    .unwrap()
    .unwrap();
    // The file is served by a little loopback server, as another network's link would be.
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\nfake-image-bytes".to_vec();
    let url = passerelle_testkit::file_server("cat.png", "image/png", png.clone()).await;
    let mut content = Content::plain("<alice> look");
    content.attachments.push(Attachment {
        name: Text::new("cat.png"),
        mime: Some("image/png".into()),
        size: None,
        url: Text::new(url),
    });
    r.h.send(out(EventKind::Message(content)), WAIT)
        .await
        .unwrap()
        .unwrap();
    let sent: Vec<Value> = r.fake.sent().into_iter().map(|s| s.body).collect();
    assert_eq!(sent.len(), 5, "{sent:#?}");
    assert_eq!(
        sent[0],
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": PERSON,
               "type": "text", "text": {"preview_url": false, "body": "<alice> hello"},
               "context": {"message_id": "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUY"}})
    );
    assert_eq!(
        sent[1],
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": PERSON,
               "type": "reaction", "reaction": {"message_id": "wamid.target", "emoji": "👍"}})
    );
    assert_eq!(
        sent[2]["reaction"],
        json!({"message_id": "wamid.target", "emoji": ""})
    );
    assert_eq!(sent[3]["text"]["body"], json!("<alice> look"));
    let media_id = sent[4]["image"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sent[4],
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": PERSON,
               "type": "image", "image": {"id": media_id}})
    );
    let upload = r.fake.media(&media_id).unwrap();
    assert_eq!(upload.data, png);
    assert_eq!(upload.mime, "image/png");
    assert_eq!(upload.file_name.as_deref(), Some("cat.png"));
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn messenger_and_instagram_sends_are_exactly_the_documented_payloads() {
    for kind in [Kind::Messenger, Kind::Instagram] {
        let mut r = running(kind, json!({})).await;
        r.fake.set_last_inbound(business(kind), PERSON, Some(1000));
        let id =
            r.h.send(out(EventKind::Message(Content::plain("<alice> hi"))), WAIT)
                .await
                .unwrap()
                .unwrap()
                .remote_id
                .unwrap();
        assert!(id.as_str().starts_with("m_"));
        let mut content = Content::plain("");
        content.attachments.push(Attachment {
            name: Text::new("cat.png"),
            mime: Some("image/png".into()),
            size: None,
            url: Text::new("https://files.example.org/cat.png"),
        });
        r.h.send(out(EventKind::Message(content)), WAIT)
            .await
            .unwrap()
            .unwrap();
        let sent: Vec<Value> = r.fake.sent().into_iter().map(|s| s.body).collect();
        let mut text = json!({"recipient": {"id": PERSON}, "message": {"text": "<alice> hi"}});
        let mut file = json!({"recipient": {"id": PERSON}, "message": {"attachment": {
            "type": "image", "payload": {"url": "https://files.example.org/cat.png", "is_reusable": true}}}});
        if kind == Kind::Messenger {
            text["messaging_type"] = json!("RESPONSE");
            file["messaging_type"] = json!("RESPONSE");
        }
        assert_eq!(sent, vec![text, file], "{kind:?}");
        // Reactions, edits and deletes can't be sent on these two: refused, not dropped.
        for kind in [
            EventKind::Reaction {
                target: "m_x".into(),
                key: Text::new("👍"),
                removed: false,
            },
            EventKind::Delete {
                target: "m_x".into(),
            },
        ] {
            assert!(matches!(
                r.h.send(out(kind), WAIT).await.unwrap(),
                Err(SendError::Unsupported(_))
            ));
        }
        r.h.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn the_window_throttling_and_a_refused_token_are_typed_errors() {
    let mut r = running(Kind::WhatsApp, json!({})).await;
    let hello = || out(EventKind::Message(Content::plain("<alice> hello")));
    // Nobody wrote: the 24-hour window is closed.
    assert!(matches!(
        r.h.send(hello(), WAIT).await.unwrap(),
        Err(SendError::WindowClosed(_))
    ));
    r.fake
        .set_last_inbound(PHONE_ID, PERSON, Some(25 * 3600 * 1000));
    assert!(matches!(
        r.h.send(hello(), WAIT).await.unwrap(),
        Err(SendError::WindowClosed(_))
    ));
    r.fake.set_last_inbound(PHONE_ID, PERSON, Some(1000));
    r.fake
        .fail_next(400, 130429, None, "(#130429) Rate limit hit", &[]);
    assert_eq!(
        r.h.send(hello(), WAIT).await.unwrap(),
        Err(SendError::RateLimited {
            retry_after: Duration::from_secs(60)
        })
    );
    r.fake.fail_next(
        400,
        80007,
        None,
        "(#80007) Rate limit issues",
        &[(
            "x-business-use-case-usage",
            r#"{"102290129340398":[{"type":"whatsapp_business_management","call_count":100,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":2}]}"#,
        )],
    );
    assert_eq!(
        r.h.send(hello(), WAIT).await.unwrap(),
        Err(SendError::RateLimited {
            retry_after: Duration::from_secs(120)
        })
    );
    assert!(r.h.send(hello(), WAIT).await.unwrap().is_ok());
    // The token is revoked: the send is kept for later and the account stops.
    r.fake.fail_next(401, 190, Some(460), "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.", &[]);
    assert_eq!(
        r.h.send(hello(), WAIT).await.unwrap(),
        Err(SendError::Disconnected)
    );
    assert!(matches!(
        r.h.wait_finished(WAIT).await,
        Some(Err(ConnectorError::AuthRejected(_)))
    ));
    // Messenger's window error is the same typed error.
    let mut m = running(Kind::Messenger, json!({})).await;
    assert!(matches!(
        m.h.send(hello(), WAIT).await.unwrap(),
        Err(SendError::WindowClosed(_))
    ));
    m.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_wrong_token_stops_the_account_at_start() {
    let fake = start_fake(Kind::WhatsApp).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = table(Kind::WhatsApp, &fake, json!({}));
    t["access_token"] = json!("EAAG-wrong");
    let mut h = Harness::start(
        build(Kind::WhatsApp, t, dir.path()),
        ACCOUNT,
        vec![PERSON.into()],
    );
    match h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::AuthRejected(why))) => assert!(!why.contains("wrong")),
        other => panic!("expected AuthRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn whatsapp_inbound_files_reactions_replies_and_statuses() {
    let mut r = running(Kind::WhatsApp, json!({"media_public_url": "set below"})).await;
    // The subscription handshake.
    assert_eq!(
        r.fake.verify(&r.hook, VERIFY, "1158201444").await,
        (200, "1158201444".to_owned())
    );
    assert_eq!(r.fake.verify(&r.hook, "guess", "1").await.0, 403);
    // A photo: offered as a signed link through the connector, which fetches it with the token.
    let photo = b"\xff\xd8\xff\xe0 a jpeg".to_vec();
    let media_id = r.fake.add_media(&photo, "image/jpeg");
    let wamid = r.fake.wamid();
    let image = json!({"from": PERSON, "id": wamid, "timestamp": "1732360000", "type": "image",
        "image": {"caption": "my cat", "mime_type": "image/jpeg", "sha256": "x", "id": media_id}});
    let body = whatsapp_body(PHONE_ID, &[(PERSON, "Peer Person")], vec![image]);
    assert_eq!(r.fake.deliver(&r.hook, &body).await, 200);
    let e = r.h.next_event(WAIT).await.unwrap();
    assert_eq!(e.sender.display_name.as_deref(), Some("Peer Person"));
    assert_eq!(e.at.0, 1_732_360_000_000);
    let c = e.content().unwrap();
    assert_eq!(c.text.as_str(), "my cat");
    let link = c.attachments[0].url.as_str().to_owned();
    assert!(link.starts_with(&format!("{}/accounts/{ACCOUNT}/media/{media_id}/", r.base)));
    assert!(!link.contains(TOKEN));
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status(), 200);
    let header = |r: &reqwest::Response, k: &str| {
        r.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    // Never run or rendered as a page of the daemon's origin; a photo may be shown inline.
    assert_eq!(header(&got, "x-content-type-options"), "nosniff");
    assert!(header(&got, "content-security-policy").starts_with("sandbox"));
    assert!(header(&got, "content-disposition").starts_with("inline"));
    assert_eq!(got.bytes().await.unwrap().to_vec(), photo);
    let forged = link.replace(&media_id, "999999999");
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403);
    // A longer life than it was signed for is a forgery too.
    let parts: Vec<&str> = link.rsplitn(4, '/').collect();
    let expires: u64 = parts[2].parse().expect("an expiry in the link");
    let longer = link.replace(&format!("/{expires}/"), &format!("/{}/", expires + 86_400));
    assert_eq!(reqwest::get(&longer).await.unwrap().status(), 403);
    // An HTML page someone sends as a document is downloaded, never shown.
    let page = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let page_id = r.fake.add_media(&page, "text/html");
    let doc = json!({"from": PERSON, "id": r.fake.wamid(), "timestamp": "1732360000",
        "type": "document", "document": {"mime_type": "text/html", "sha256": "x", "id": page_id,
        "filename": "invoice.html"}});
    let body = whatsapp_body(PHONE_ID, &[(PERSON, "Peer Person")], vec![doc]);
    assert_eq!(r.fake.deliver(&r.hook, &body).await, 200);
    let e = r.h.next_event(WAIT).await.unwrap();
    let link = e.content().unwrap().attachments[0].url.as_str().to_owned();
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        header(&got, "content-disposition").starts_with("attachment"),
        "{:?}",
        got.headers()
    );
    assert_eq!(header(&got, "x-content-type-options"), "nosniff");
    assert!(header(&got, "content-security-policy").starts_with("sandbox"));
    assert_eq!(got.bytes().await.unwrap().to_vec(), page);
    // A reply, a reaction, another reaction replacing it, and its removal.
    let mut reply = whatsapp_text(PERSON, &r.fake.wamid(), "yes");
    reply["context"] = json!({"from": PHONE_ID, "id": "wamid.original"});
    let react = |emoji: &str, id: String| {
        json!({"from": PERSON, "id": id, "timestamp": "1732360001", "type": "reaction",
               "reaction": {"message_id": "wamid.original", "emoji": emoji}})
    };
    let items = vec![
        reply,
        react("👍", r.fake.wamid()),
        react("❤️", r.fake.wamid()),
        react("", r.fake.wamid()),
    ];
    let body = whatsapp_body(PHONE_ID, &[(PERSON, "Peer Person")], items);
    assert_eq!(r.fake.deliver(&r.hook, &body).await, 200);
    let e = r.h.next_event(WAIT).await.unwrap();
    assert_eq!(
        e.reply_to.as_ref().map(|r| r.as_str()),
        Some("wamid.original")
    );
    let mut reactions = Vec::new();
    for _ in 0..4 {
        let e = r.h.next_event(WAIT).await.unwrap();
        if let EventKind::Reaction { key, removed, .. } = e.kind {
            reactions.push((key.as_str().to_owned(), removed));
        }
    }
    assert_eq!(
        reactions,
        vec![
            ("👍".to_owned(), false),
            ("👍".to_owned(), true),
            ("❤️".to_owned(), false),
            ("❤️".to_owned(), true)
        ]
    );
    // Statuses are recorded (ids only); a failed one keeps its error code.
    let statuses = fake::whatsapp_statuses(
        PHONE_ID,
        vec![
            json!({"id": "wamid.sent1", "status": "delivered", "timestamp": "1732360002", "recipient_id": PERSON}),
            json!({"id": "wamid.sent2", "status": "failed", "timestamp": "1732360003", "recipient_id": PERSON,
                   "errors": [{"code": 131047, "title": "Re-engagement message"}]}),
        ],
    );
    assert_eq!(r.fake.deliver(&r.hook, &statuses).await, 200);
    let state = r.h.state();
    let read = |v: Option<Vec<u8>>| serde_json::from_slice::<Value>(&v.unwrap()).unwrap();
    assert_eq!(
        read(
            state
                .get(&passerelle_sdk::state::key(&["delivery", "wamid.sent1"]))
                .await
                .unwrap()
        )["status"],
        "delivered"
    );
    assert_eq!(
        read(
            state
                .get(&passerelle_sdk::state::key(&["delivery", "wamid.sent2"]))
                .await
                .unwrap()
        )["error_code"],
        131047
    );
    // Another phone number's messages on the same app never enter this account.
    let foreign = whatsapp_body(
        "999999999999999",
        &[(PERSON, "Peer Person")],
        vec![whatsapp_text(PERSON, &r.fake.wamid(), "not for you")],
    );
    assert_eq!(r.fake.deliver(&r.hook, &foreign).await, 200);
    assert!(r.h.next_event(Duration::from_millis(500)).await.is_none());
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn messenger_and_instagram_inbound_edits_deletes_reactions_and_echoes() {
    for kind in [Kind::Messenger, Kind::Instagram] {
        let mut r = running(kind, json!({})).await;
        let b = business(kind);
        let p = product(kind);
        let (profile, name) = match kind {
            Kind::Messenger => (
                json!({"first_name": "Peter", "last_name": "Chang"}),
                "Peter Chang",
            ),
            _ => (json!({"username": "peter.chang"}), "peter.chang"),
        };
        r.fake.add_person(PERSON, profile);
        let mid = r.fake.mid();
        let mut echo = messaging_text(b, PERSON, &r.fake.mid(), "our own send");
        echo["message"]["is_echo"] = json!(true);
        echo["message"]["app_id"] = json!(1517776481860111u64);
        let mut photo = messaging_text(PERSON, b, &r.fake.mid(), "");
        photo["message"] = json!({"mid": r.fake.mid(), "attachments": [
            {"type": "image", "payload": {"url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"}}]});
        let mut reply = messaging_text(PERSON, b, &r.fake.mid(), "a reply");
        reply["message"]["reply_to"] = json!({"mid": mid});
        let mut items = vec![
            messaging_text(PERSON, b, &mid, "first"),
            echo,
            photo,
            reply,
            json!({"sender": {"id": PERSON}, "recipient": {"id": b}, "timestamp": 1732360005000u64,
                   "reaction": {"mid": mid, "action": "react", "reaction": "love", "emoji": "❤️"}}),
            json!({"sender": {"id": PERSON}, "recipient": {"id": b}, "timestamp": 1732360006000u64,
                   "reaction": {"mid": mid, "action": "unreact"}}),
        ];
        if kind == Kind::Messenger {
            items.push(json!({"sender": {"id": PERSON}, "recipient": {"id": b}, "timestamp": 1732360007000u64,
                "message_edit": {"mid": mid, "text": "first, edited", "num_edit": 1}}));
        } else {
            items.push(json!({"sender": {"id": PERSON}, "recipient": {"id": b}, "timestamp": 1732360007000u64,
                "message": {"mid": mid, "is_deleted": true}}));
        }
        assert_eq!(
            r.fake.deliver(&r.hook, &messaging_body(p, b, items)).await,
            200
        );
        let mut got = Vec::new();
        while let Some(e) = r.h.next_event(Duration::from_secs(2)).await {
            got.push(e);
        }
        let names: Vec<&str> = got.iter().map(|e| e.kind.name()).collect();
        let last = if kind == Kind::Messenger {
            "edit"
        } else {
            "delete"
        };
        assert_eq!(
            names,
            vec![
                "message", "message", "message", "reaction", "reaction", last
            ],
            "{kind:?}"
        );
        assert_eq!(
            got[0].sender.display_name.as_deref(),
            Some(name),
            "named from the profile API"
        );
        assert_eq!(got[0].sender.id.as_str(), PERSON);
        assert_eq!(got[1].content().unwrap().attachments.len(), 1);
        assert_eq!(
            got[2].reply_to.as_ref().map(|m| m.as_str()),
            Some(mid.as_str())
        );
        assert!(
            matches!(&got[4].kind, EventKind::Reaction { key, removed: true, .. } if key.as_str() == "❤️")
        );
        // Another Page's entry is dropped.
        let foreign = messaging_body(
            p,
            "111111111111111",
            vec![messaging_text(
                PERSON,
                "111111111111111",
                &r.fake.mid(),
                "elsewhere",
            )],
        );
        assert_eq!(r.fake.deliver(&r.hook, &foreign).await, 200);
        assert!(r.h.next_event(Duration::from_millis(300)).await.is_none());
        // A WhatsApp body on a Messenger hook is malformed: refused, nothing emitted.
        let wrong = whatsapp_body(PHONE_ID, &[], vec![whatsapp_text(PERSON, "wamid.x", "x")]);
        assert_eq!(r.fake.deliver(&r.hook, &wrong).await, 400);
        assert!(r.h.next_event(Duration::from_millis(300)).await.is_none());
        r.h.shutdown(WAIT).await;
    }
}
