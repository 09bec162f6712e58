//! The management room: the configured admins talk to the bot in a direct chat (any room the bot
//! is in that no link names). Commands: `help`, `status`, `links`, `dead-letters`. The bot also warns the admins
//! there when an account stays disconnected too long, and says when it is back.

use passerelle_sdk::{AccountId, ConnectionState, DaemonView, StateHandle};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const HELP: &str = "passerelle commands: help (this text), status (each account's connection), \
                    links (which rooms are bridged together), dead-letters (deliveries given up \
                    on)";

fn state_word(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Connected => "connected",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Stopped => "stopped",
        _ => "unknown",
    }
}

/// The answer to an admin's message, or `None` when it is not a command.
pub fn answer(body: &str, view: &DaemonView) -> Option<String> {
    let word = body.trim().trim_start_matches('!').to_ascii_lowercase();
    match word.as_str() {
        "help" => Some(HELP.to_owned()),
        "status" => {
            let accounts = view.accounts();
            if accounts.is_empty() {
                return Some("no accounts are running".into());
            }
            let lines: Vec<String> = accounts
                .iter()
                .map(|a| format!("{} ({}): {}", a.account, a.kind, state_word(a.state)))
                .collect();
            Some(lines.join("\n"))
        }
        "links" => {
            let links = view.links();
            if links.is_empty() {
                return Some("no links are configured".into());
            }
            let lines: Vec<String> = links
                .iter()
                .map(|l| {
                    let rooms: Vec<String> =
                        l.rooms.iter().map(|(a, r)| format!("{a}: {r}")).collect();
                    format!("{}: {}", l.name, rooms.join(" ⇄ "))
                })
                .collect();
            Some(lines.join("\n"))
        }
        "dead-letters" | "deadletters" => {
            let letters = view.dead_letters();
            if letters.is_empty() {
                return Some("no delivery was given up on".into());
            }
            let now = passerelle_sdk::Timestamp::now().0;
            let mut lines: Vec<String> = letters
                .iter()
                .take(20)
                .map(|d| {
                    format!(
                        "{} {}: {} after {} tries, queued {} ago (event {}, row {})",
                        d.account,
                        d.room,
                        d.reason,
                        d.attempts,
                        age(now.saturating_sub(d.queued_at.0) / 1000),
                        d.key,
                        d.id
                    )
                })
                .collect();
            if letters.len() > 20 {
                lines.push(format!(
                    "… and {} more (see /dead-letters)",
                    letters.len() - 20
                ));
            }
            Some(lines.join("\n"))
        }
        _ => None,
    }
}

/// `secs` in words: `42 s`, `7 min`, `3 h`, `2 d`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// Whether a room whose joined members are `members` is a direct chat between the bot and
/// `admin`: the two of them and nobody else. Commands are answered only there, since the
/// answers name rooms, accounts and people's numbers.
pub fn is_direct_chat(members: &[String], bot: &str, admin: &str) -> bool {
    members.len() == 2 && members.iter().any(|m| m == bot) && members.iter().any(|m| m == admin)
}

/// The connector-state key of an admin's management room.
fn room_key(admin: &str) -> String {
    passerelle_sdk::state::key(&["admin_room", admin])
}

/// How a mode talks to the admins: the bot mode through matrix-sdk, the appservice as its bot
/// user through the homeserver's API.
pub(crate) trait Notices {
    /// Whether a management room remembered for an admin can still be written to.
    async fn usable(&self, room: &str) -> bool;
    /// Opens a direct chat with `admin`: its room id.
    async fn open_direct(&self, admin: &str) -> Option<String>;
    /// Says `text` as the bot in `room` (an `m.notice`).
    async fn notice(&self, room: &str, text: &str);
}

/// Tells every admin `text` in their management room (a direct chat is opened, and remembered,
/// when none is known).
pub(crate) async fn notify(to: &impl Notices, state: &StateHandle, admins: &[String], text: &str) {
    for admin in admins {
        let known = state.get_text(&room_key(admin)).await.ok().flatten();
        let room = match known {
            Some(r) if to.usable(&r).await => r,
            _ => {
                let Some(r) = to.open_direct(admin).await else {
                    continue;
                };
                let _ = state.put(&room_key(admin), r.as_bytes().to_vec()).await;
                r
            }
        };
        to.notice(&room, text).await;
    }
}

/// An admin's message in `room`, whose joined members are `members`: answered (the answer is
/// returned) only in a direct chat between the bot and the admin, which is then remembered as
/// the admin's management room.
pub(crate) async fn command(
    state: &StateHandle,
    view: &DaemonView,
    room: &str,
    members: &[String],
    bot: &str,
    admin: &str,
    body: Option<&str>,
) -> Option<String> {
    if !is_direct_chat(members, bot, admin) {
        tracing::debug!(
            room,
            "an admin's message outside a direct chat with the bot; not answered"
        );
        return None;
    }
    let _ = state.put(&room_key(admin), room.as_bytes().to_vec()).await;
    answer(body?, view)
}

/// How often to look at the accounts' states for a warning delay of `secs`.
fn tick_every(secs: u64) -> Duration {
    Duration::from_millis((secs * 1000 / 4).clamp(500, 10_000))
}

/// The admins' watch over the accounts, as both modes run it: a [`Watchdog`] looked at every
/// [`tick_every`]; never ready when there are no admins or the warning is off.
#[derive(Debug)]
pub struct Watch {
    dog: Watchdog,
    tick: Option<tokio::time::Interval>,
}

impl Watch {
    /// For `disconnect_warning_secs` and whether any admin is configured.
    pub fn new(warning_secs: u64, has_admins: bool) -> Self {
        let on = has_admins && warning_secs > 0;
        Self {
            dog: Watchdog::new(Duration::from_secs(warning_secs)),
            tick: on.then(|| tokio::time::interval(tick_every(warning_secs))),
        }
    }

    /// The next notes due for the admins. Cancel-safe (the only wait is the interval's tick), so
    /// it can be one arm of a connector's `select!`.
    pub async fn notes(&mut self, view: &DaemonView) -> Vec<String> {
        let Some(tick) = self.tick.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            tick.tick().await;
            let notes = self.dog.tick(view, Instant::now());
            if !notes.is_empty() {
                return notes;
            }
        }
    }
}

/// Watches the accounts' states and says when one has been down longer than the threshold, and
/// when it is back.
#[derive(Debug)]
pub struct Watchdog {
    threshold: Duration,
    down_since: HashMap<AccountId, Instant>,
    warned: HashMap<AccountId, bool>,
}

impl Watchdog {
    /// Warns after `threshold`; a zero threshold never warns.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            down_since: HashMap::new(),
            warned: HashMap::new(),
        }
    }

    /// What to tell the admins now.
    pub fn tick(&mut self, view: &DaemonView, now: Instant) -> Vec<String> {
        let mut notes = Vec::new();
        if self.threshold.is_zero() {
            return notes;
        }
        for a in view.accounts() {
            if a.state == ConnectionState::Connected {
                self.down_since.remove(&a.account);
                if self.warned.remove(&a.account) == Some(true) {
                    notes.push(format!("{} ({}) is connected again", a.account, a.kind));
                }
                continue;
            }
            let since = *self.down_since.entry(a.account.clone()).or_insert(now);
            let down = now.saturating_duration_since(since);
            if down >= self.threshold && !self.warned.get(&a.account).copied().unwrap_or(false) {
                self.warned.insert(a.account.clone(), true);
                notes.push(format!(
                    "{} ({}) has been {} for {} s",
                    a.account,
                    a.kind,
                    state_word(a.state),
                    down.as_secs()
                ));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_sdk::{LinkSummary, StatusReporter};

    fn view() -> (DaemonView, StatusReporter) {
        let (irc, irc_rx) = StatusReporter::new();
        let (_mx, mx_rx) = StatusReporter::new();
        irc.set(ConnectionState::Connected);
        let view = DaemonView::new(
            vec![
                ("irc".into(), "irc".into(), irc_rx),
                ("matrix".into(), "matrix".into(), mx_rx),
            ],
            vec![LinkSummary {
                name: "lobby".into(),
                rooms: vec![("irc".into(), "#a".into()), ("matrix".into(), "!r".into())],
            }],
        );
        (view, irc)
    }

    #[test]
    fn commands_answer_and_other_text_does_not() {
        let (view, _irc) = view();
        assert!(answer("help", &view).unwrap().contains("status"));
        assert_eq!(
            answer(" !STATUS ", &view).unwrap(),
            "irc (irc): connected\nmatrix (matrix): connecting"
        );
        assert_eq!(
            answer("links", &view).unwrap(),
            "lobby: irc: #a ⇄ matrix: !r"
        );
        assert_eq!(answer("hello bot", &view), None);
    }

    #[test]
    fn commands_are_answered_only_between_the_bot_and_one_admin() {
        let members = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (bot, admin) = ("@bot:example.org", "@admin:example.org");
        assert!(is_direct_chat(&members(&[bot, admin]), bot, admin));
        assert!(!is_direct_chat(
            &members(&[bot, admin, "@eve:example.org"]),
            bot,
            admin
        ));
        assert!(!is_direct_chat(
            &members(&[admin, "@eve:example.org"]),
            bot,
            admin
        ));
        assert!(!is_direct_chat(&members(&[bot]), bot, admin));
    }

    #[test]
    fn dead_letters_are_listed_with_ids_and_reasons_only() {
        let log = passerelle_sdk::DeadLetterLog::default();
        let view = DaemonView::with_dead_letters(Vec::new(), Vec::new(), log.clone());
        assert_eq!(
            answer("dead-letters", &view).unwrap(),
            "no delivery was given up on"
        );
        let now = passerelle_sdk::Timestamp::now().0;
        let key = passerelle_sdk::EventKey::new();
        log.push(passerelle_sdk::DeadLetter {
            id: 42,
            key,
            account: "irc".into(),
            room: "#a".into(),
            reason: "max_attempts".into(),
            attempts: 100,
            queued_at: passerelle_sdk::Timestamp(now - 3 * 3600 * 1000),
            dead_at: passerelle_sdk::Timestamp(now),
        });
        assert_eq!(
            answer("!dead-letters", &view).unwrap(),
            format!("irc #a: max_attempts after 100 tries, queued 3 h ago (event {key}, row 42)")
        );
        assert!(answer("help", &view).unwrap().contains("dead-letters"));
    }

    #[test]
    fn the_watchdog_warns_once_after_the_threshold_and_says_when_it_is_back() {
        let (view, irc) = view();
        let mut dog = Watchdog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        irc.set(ConnectionState::Disconnected);
        assert!(dog.tick(&view, t0).is_empty());
        let notes = dog.tick(&view, t0 + Duration::from_secs(61));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("irc (irc) has been disconnected for 61 s"));
        assert!(
            dog.tick(&view, t0 + Duration::from_secs(120)).is_empty(),
            "warned once"
        );
        irc.set(ConnectionState::Connected);
        assert_eq!(
            dog.tick(&view, t0 + Duration::from_secs(130)),
            vec!["irc (irc) is connected again".to_owned()]
        );
        assert!(Watchdog::new(Duration::ZERO).tick(&view, t0).is_empty());
    }
}
