//! End-to-end: the reverse proxy the README asks for. The shipped `deploy/nginx.conf` (with only
//! its addresses and file paths changed to the test's) runs on a real nginx from Debian's
//! packages, over HTTPS with a throwaway CA, in front of the real daemon's public listener; a
//! WhatsApp webhook signed as Meta signs it goes through and is bridged to the HTTP API.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_meta::testing::{FakeMeta, Product, whatsapp_body, whatsapp_text};
use passerelle_testkit::servers::{Nginx, make_certificates_for};
use std::time::Duration;

const TOKEN: &str = "proxy-token-0123456789abcdef";
const GRAPH_TOKEN: &str = "EAAG-proxy-graph-token";
const SECRET: &str = "proxy-app-secret";
const PHONE_ID: &str = "106540352242922";
const ALICE: &str = "15551230001";
const HOST: &str = "bridge.passerelle.test";
const WAIT: Duration = Duration::from_secs(20);

/// The shipped site file with the test's addresses and paths: each value replaced must be found,
/// so the file the test runs is the one users copy.
fn site(https: u16, http: u16, upstream: u16, dir: &std::path::Path) -> String {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
    )
    .expect("deploy/nginx.conf");
    let d = dir.display();
    let swaps = [
        (
            "listen 443 ssl http2;",
            format!("listen 127.0.0.1:{https} ssl http2;"),
        ),
        ("listen [::]:443 ssl http2;", String::new()),
        ("listen 80;", format!("listen 127.0.0.1:{http};")),
        ("listen [::]:80;", String::new()),
        (
            "server_name bridge.example.org;",
            format!("server_name {HOST};"),
        ),
        (
            "/etc/letsencrypt/live/bridge.example.org/fullchain.pem",
            format!("{d}/server.pem"),
        ),
        (
            "/etc/letsencrypt/live/bridge.example.org/privkey.pem",
            format!("{d}/server.key"),
        ),
        (
            "server 127.0.0.1:9181;",
            format!("server 127.0.0.1:{upstream};"),
        ),
        (
            "/etc/nginx/passerelle-proxy.conf",
            format!("{d}/passerelle-proxy.conf"),
        ),
    ];
    let mut text = shipped;
    for (from, to) in swaps {
        assert!(
            text.contains(from),
            "deploy/nginx.conf no longer has {from:?}"
        );
        text = text.replace(from, &to);
    }
    text
}

#[tokio::test]
async fn a_signed_webhook_through_nginx_over_https_is_bridged_and_the_admin_paths_are_not_reachable()
 {
    let fake = FakeMeta::start(GRAPH_TOKEN, SECRET).await;
    fake.add(Product::WhatsApp, PHONE_ID);
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, public, api_port) = (free_port(), free_port(), free_port());
    let config = format!(
        r##"
{head}public_listen = "127.0.0.1:{public}"

[accounts."wa"]
kind = "whatsapp"
phone_number_id = "{PHONE_ID}"
access_token = "{GRAPH_TOKEN}"
app_secret = "{SECRET}"
verify_token = "proxy-verify"
api_base = "{base}"

{api}
[[links]]
name = "alice"
rooms = [
  {{ account = "wa", room = "{ALICE}" }},
  {{ account = "api.main", room = "alice" }},
]
"##,
        head = common::base_config(dir.path(), admin),
        base = fake.api_base(),
        api = common::api_account(api_port, TOKEN),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;

    let work = Nginx::workdir();
    let ca = make_certificates_for(work.path(), &[HOST]);
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/passerelle-proxy.conf"),
        work.path().join("passerelle-proxy.conf"),
    )
    .expect("copy deploy/passerelle-proxy.conf");
    let (https, http) = (free_port(), free_port());
    let site = site(https, http, public, work.path());
    let nginx = Nginx::start(work, &site, https);

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca.pem")).expect("CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve(HOST, std::net::SocketAddr::from(([127, 0, 0, 1], https)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("https://{HOST}:{https}");

    // Meta's signed webhook, over HTTPS through nginx.
    let api = Api::new(api_port, TOKEN);
    let mut stream = api.stream().await;
    let text = "through the proxy, signed";
    let body = whatsapp_body(
        PHONE_ID,
        &[(ALICE, "Alice Martin")],
        vec![whatsapp_text(ALICE, &fake.wamid(), text)],
    )
    .to_string();
    let post = |signature: String| {
        client
            .post(format!("{base}/hooks/wa"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
    };
    let answer = post(fake.signature(body.as_bytes()))
        .await
        .expect("nginx answers over HTTPS");
    assert_eq!(answer.status().as_u16(), 200, "{}", nginx.error_log());
    let got = stream.next(WAIT).await.expect("the webhook is bridged");
    assert_eq!(got["text"], text);
    assert_eq!(got["gateway"], "alice");
    // A forged signature goes through nginx too, and the daemon refuses it: the body reached it
    // as sent, and the proof is the daemon's.
    let forged = post(format!("sha256={}", "0".repeat(64)))
        .await
        .expect("nginx answers");
    assert_eq!(forged.status().as_u16(), 401);

    // The admin paths are not reachable through the proxy; /metrics still is on the admin
    // listener itself.
    for path in [
        "/metrics",
        "/readyz",
        "/dead-letters",
        "/reload",
        "/healthz",
        "/",
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("nginx answers");
        assert_eq!(r.status().as_u16(), 404, "{path} through the proxy");
        let text = r.text().await.unwrap_or_default();
        assert!(!text.contains("passerelle_"), "{path} showed metrics");
    }
    let direct = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("admin listener");
    assert_eq!(direct.status().as_u16(), 200);
    // Plain HTTP is sent to HTTPS.
    let plain = client
        .get(format!("http://{HOST}:{http}/hooks/wa"))
        .send()
        .await
        .expect("nginx answers plain HTTP");
    assert_eq!(plain.status().as_u16(), 301);
    // nginx logged no message text.
    assert!(!nginx.access_log().contains(text));
    assert!(!nginx.error_log().contains(text));
}
