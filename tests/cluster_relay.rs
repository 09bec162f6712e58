//! Cluster mode behind a load balancer: Telegram's webhook reaches two instances of the daemon
//! in turn through a real nginx (round robin), though only one of them runs the Telegram
//! account; the other proves each call, keeps it in the shared PostgreSQL store and answers
//! it, and the owner bridges it to IRC (a real InspIRCd, its account at the other instance).
//! The Telegram owner killed with SIGKILL mid-stream loses nothing: while no one runs the
//! account, the survivor still takes and keeps the calls, and bridges them once it owns it.

mod common;

use common::{Daemon, free_port};
use passerelle_telegram::testing::{FakeTelegram, User};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::postgres::Postgres;
use passerelle_testkit::servers::{Inspircd, Nginx};
use std::path::Path;
use std::time::{Duration, Instant};

const BOT: &str = "123456789:AAE-cluster_bot_token";
const SECRET: &str = "cluster_webhook-secret-0123456789abcdef";
const GROUP: i64 = -1001000000001;
const LEASE_SECS: u64 = 5;

/// One instance's configuration: the same for both but the name, admin port and data directory.
fn instance_config(
    dir: &Path,
    secrets: &Path,
    name: &str,
    admin: u16,
    hook: &str,
    telegram: &str,
    irc_port: u16,
) -> String {
    format!(
        r##"
{head}

[accounts."tg"]
kind = "telegram"
token = "{BOT}"
api_base = "{telegram}"
mode = "webhook"
webhook_url = "{hook}"
webhook_secret = "{SECRET}"

{irc}
[[links]]
name = "lobby"
rooms = [
  {{ account = "tg", room = "{GROUP}" }},
  {{ account = "irc.main", room = "#tg" }},
]
"##,
        head = common::cluster_head(
            dir,
            secrets,
            name,
            admin,
            LEASE_SECS,
            r#""tg" = "a", "irc.main" = "b""#
        ),
        irc = common::irc_account(irc_port),
    )
}

async fn get(url: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}

/// `account`'s state in an instance's `/readyz`.
async fn state_at(admin: u16, account: &str) -> Option<String> {
    let body = get(&format!("http://127.0.0.1:{admin}/readyz")).await?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["accounts"][account].as_str().map(str::to_owned)
}

async fn wait_state(admin: u16, account: &str, want: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if state_at(admin, account).await.as_deref() == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How many calls for `account` an instance kept, from its `/metrics`.
async fn kept_at(admin: u16, account: &str) -> u64 {
    let text = get(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap_or_default();
    let label = format!("passerelle_relay_kept_total{{account=\"{account}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&label))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A Telegram update as the Bot API sends it.
fn update(update_id: i64, message_id: i64, text: &str) -> serde_json::Value {
    serde_json::json!({"update_id": update_id, "message": {"message_id": message_id, "date": 1,
        "chat": {"id": GROUP, "type": "supergroup", "title": "Lobby"},
        "from": {"id": 7001, "is_bot": false, "first_name": "Lin"}, "text": text}})
}

async fn post_hook(url: &str, secret: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// 400 Telegram messages through the balancer, a SIGKILL of the Telegram owner after 150: every
/// message reaches IRC in order with at most one repeat; the instance that did not run the
/// account kept calls for it before the kill, and forged or repeated calls change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_at_any_instance_are_bridged_by_the_owner_and_survive_its_death() {
    const MESSAGES: usize = 400;
    const KILL_AT: usize = 150;
    let irc = Inspircd::start();
    let (url, _pg) = Postgres::shared_database();
    let fake = std::sync::Arc::new(FakeTelegram::start(BOT).await);
    fake.add_chat(GROUP, "supergroup", "Lobby", false);

    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("database-url"), &url).unwrap();
    std::fs::write(secrets.path().join("outbox-key"), "17".repeat(32)).unwrap();
    let admins = [free_port(), free_port()];
    // The balancer: round robin over both instances, as a deployment's would be.
    let lb = free_port();
    let site = format!(
        "upstream passerelle {{ server 127.0.0.1:{}; server 127.0.0.1:{}; }}\n\
         server {{ listen 127.0.0.1:{lb}; location /hooks/ {{ proxy_pass http://passerelle; }} }}\n",
        admins[0], admins[1]
    );
    let nginx = Nginx::start(Nginx::workdir(), &site, lb);
    let hook = format!("http://127.0.0.1:{lb}/hooks/tg");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut daemons: Vec<Daemon> = ["a", "b"]
        .iter()
        .zip(&dirs)
        .zip(admins)
        .map(|((name, dir), admin)| {
            let config = instance_config(
                dir.path(),
                secrets.path(),
                name,
                admin,
                &hook,
                &fake.api_base(),
                irc.port,
            );
            Daemon::start(dir.path(), &config, admin)
        })
        .collect();
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join("#tg").await;
    assert!(
        wait_state(admins[0], "tg", "connected", Duration::from_secs(60)).await,
        "tg connected at a; logs:\n{}",
        daemons[0].logs()
    );
    assert!(wait_state(admins[1], "irc.main", "connected", Duration::from_secs(60)).await);
    assert_eq!(
        state_at(admins[1], "tg").await.as_deref(),
        Some("elsewhere")
    );
    assert!(
        bob.wait_for_join("bridge", "#tg", Duration::from_secs(30))
            .await
    );
    assert_eq!(fake.webhook().map(|(u, _)| u), Some(hook.clone()));
    // b's status page says where each account runs.
    let page = get(&format!("http://127.0.0.1:{}/status", admins[1]))
        .await
        .expect("b's /status");
    assert!(page.contains("this is instance <b>b</b>"), "{page}");
    for (account, owner, state) in [("tg", "a", "elsewhere"), ("irc.main", "b", "connected")] {
        let row = page
            .lines()
            .find(|l| l.contains(&format!("data-account=\"{account}\"")))
            .unwrap_or_else(|| panic!("no row for {account}: {page}"));
        assert!(row.contains(&format!("data-owner=\"{owner}\"")), "{row}");
        assert!(row.contains(&format!("data-state=\"{state}\"")), "{row}");
    }

    // Forged calls are refused at either instance, before anything is kept.
    let forged = update(1, 1, "forged").to_string();
    for admin in admins {
        let direct = format!("http://127.0.0.1:{admin}/hooks/tg");
        assert_eq!(post_hook(&direct, "guess", &forged).await, 401);
        assert_eq!(post_hook(&direct, SECRET, "{\"message\":").await, 400);
    }
    // One real update sent to both instances (a network retrying at another): bridged once.
    let twice = update(900_001, 900_001, "sent to both").to_string();
    for admin in admins {
        let direct = format!("http://127.0.0.1:{admin}/hooks/tg");
        assert_eq!(post_hook(&direct, SECRET, &twice).await, 200);
    }
    let first = bob
        .next_message(Duration::from_secs(20))
        .await
        .expect("the update sent to both reaches IRC");
    assert_eq!(first.text, "<Lin> sent to both");

    let lin = User::new(7001, "Lin");
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut distinct = std::collections::BTreeSet::new();
        while distinct.len() < MESSAGES {
            let Some(m) = bob.next_message(Duration::from_secs(60)).await else {
                break;
            };
            distinct.insert(m.text.clone());
            lines.push(m.text);
        }
        if let Some(extra) = bob.next_message(Duration::from_secs(2)).await {
            lines.push(extra.text);
        }
        lines
    });
    let mut killed_at = None;
    let mut dark = None;
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..MESSAGES {
        if i == KILL_AT {
            // b took calls for the account it does not run before the kill.
            let deadline = Instant::now() + Duration::from_secs(30);
            while kept_at(admins[1], "tg").await < 10 {
                assert!(Instant::now() < deadline, "b kept no call for tg");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            daemons[0].kill();
            killed_at = Some(Instant::now());
            // How many updates b answered while no instance ran tg (none without the relay).
            let (fake, queued, b) = (fake.clone(), queued.clone(), admins[1]);
            dark = Some(tokio::spawn(async move {
                let mut answered = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline
                    && state_at(b, "tg").await.as_deref() != Some("connected")
                {
                    let since_kill = queued.load(std::sync::atomic::Ordering::SeqCst);
                    answered = answered.max(since_kill.saturating_sub(fake.pending_updates()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answered
            }));
        }
        fake.user_says(GROUP, &lin, &format!("t {i:05}"));
        if killed_at.is_some() {
            queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        wait_state(admins[1], "tg", "connected", Duration::from_secs(60)).await,
        "b took tg over; logs:\n{}",
        daemons[1].logs()
    );
    let back_after = killed_at.expect("killed").elapsed();
    let answered_dark = dark.expect("killed").await.unwrap();
    assert!(
        answered_dark > 0,
        "b answered no update while no instance ran tg"
    );
    let lines = collector.await.unwrap();
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("<Lin> t {i:05}")).collect();
    let repeats = common::check_stream(&lines, &want, 1);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("forged") || l.contains("sent to both")),
        "a forged or repeated call was bridged: {lines:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.pending_updates() > 0 {
        assert!(Instant::now() < deadline, "updates left unanswered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "cluster relay: {} lines for {MESSAGES} updates, {repeats} repeats; b kept {} calls for \
         tg, {answered_dark} of them answered while no instance ran tg; tg back at b {:.1} s \
         after the kill (lease {LEASE_SECS} s)",
        lines.len(),
        kept_at(admins[1], "tg").await,
        back_after.as_secs_f64()
    );
    daemons[1].stop();
    drop(nginx);
}
