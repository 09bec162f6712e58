//! The status page for people (`GET /status` on the admin listener): each account's kind, state,
//! since when and last error; each link's rooms and directions; what is queued and given up on
//! per room; messages bridged per account in the last hour; the version. Plain HTML that
//! refreshes itself, no script. Ids, states and counts only: never message text, never a token
//! (a connector's error says what failed, not what was sent).

use passerelle_sdk::{AccountId, ConnectionState};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Minutes counted for "the last hour".
const MINUTES: usize = 60;

/// What the page shows of one account.
#[derive(Clone, Debug)]
pub struct AccountLine {
    /// Its state now.
    pub state: ConnectionState,
    /// When it entered that state (ms since the epoch).
    pub since_ms: u64,
    /// Its connector's last error, and when (ms since the epoch).
    pub last_error: Option<(String, u64)>,
}

/// Each account's state and last error, written by its supervisor.
#[derive(Default)]
pub struct Board {
    accounts: dashmap::DashMap<AccountId, AccountLine>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The longest error kept (an error names what failed; anything longer is cut).
const MAX_ERROR: usize = 300;

impl Board {
    /// Notes `account`'s state; the time only when it changed.
    pub fn state(&self, account: &AccountId, state: ConnectionState) {
        let mut line = self
            .accounts
            .entry(account.clone())
            .or_insert_with(|| AccountLine {
                state,
                since_ms: now_ms(),
                last_error: None,
            });
        if line.state != state {
            line.state = state;
            line.since_ms = now_ms();
        }
    }

    /// Notes `account`'s connector's last error.
    pub fn error(&self, account: &AccountId, error: &str) {
        let mut text: String = error.chars().filter(|c| !c.is_control()).collect();
        if text.len() > MAX_ERROR {
            let mut cut = MAX_ERROR;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        if let Some(mut line) = self.accounts.get_mut(account) {
            line.last_error = Some((text, now_ms()));
        }
    }

    /// Forgets `account` (a reload removed it).
    pub fn remove(&self, account: &AccountId) {
        self.accounts.remove(account);
    }

    /// What is known of `account`.
    pub fn get(&self, account: &AccountId) -> Option<AccountLine> {
        self.accounts.get(account).map(|l| l.clone())
    }
}

/// Counts per minute over the last hour, for one account and one way.
struct Hourly {
    /// (minute since the epoch, count) per slot, the slot being the minute modulo 60.
    slots: [(u64, u32); MINUTES],
}

impl Hourly {
    fn add(&mut self, minute: u64) {
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }

    fn last_hour(&self, minute: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(m, _)| *m + (MINUTES as u64) > minute && *m <= minute)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }
}

/// Messages bridged, per account: taken in from it (routed to at least one room) and delivered
/// to it. Process-wide, like the Prometheus counters.
#[derive(Default)]
pub struct Traffic {
    counts: Mutex<std::collections::HashMap<(AccountId, bool), Hourly>>,
}

impl Traffic {
    fn add(&self, account: &AccountId, inbound: bool) {
        let minute = now_ms() / 60_000;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .entry((account.clone(), inbound))
            .or_insert_with(|| Hourly {
                slots: [(0, 0); MINUTES],
            })
            .add(minute);
    }

    /// One message from `account` routed.
    pub fn received(&self, account: &AccountId) {
        self.add(account, true);
    }

    /// One message delivered to `account`.
    pub fn delivered(&self, account: &AccountId) {
        self.add(account, false);
    }

    /// (received, delivered) for `account` in the last hour.
    pub fn last_hour(&self, account: &AccountId) -> (u64, u64) {
        let minute = now_ms() / 60_000;
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let of = |inbound: bool| {
            counts
                .get(&(account.clone(), inbound))
                .map(|h| h.last_hour(minute))
                .unwrap_or(0)
        };
        (of(true), of(false))
    }
}

/// The process's traffic counts.
pub fn traffic() -> &'static Traffic {
    static TRAFFIC: OnceLock<Traffic> = OnceLock::new();
    TRAFFIC.get_or_init(Traffic::default)
}

/// One account's row on the page.
pub struct AccountRow {
    /// The account.
    pub id: AccountId,
    /// Its connector kind.
    pub kind: String,
    /// Its line on the board, if it ran.
    pub line: Option<AccountLine>,
    /// Messages from it and to it in the last hour.
    pub last_hour: (u64, u64),
    /// Whether it is enabled.
    pub enabled: bool,
}

/// One link's rooms: (account, room, direction).
pub struct LinkRow {
    /// The link's name.
    pub name: String,
    /// Its rooms.
    pub rooms: Vec<(String, String, &'static str)>,
}

/// Everything the page shows.
pub struct Page {
    /// The accounts, in configuration order.
    pub accounts: Vec<AccountRow>,
    /// The links in force.
    pub links: Vec<LinkRow>,
    /// Per destination room: queued and given up on.
    pub rooms: Vec<crate::store::RoomCounts>,
    /// When the page was made (ms since the epoch).
    pub now_ms: u64,
    /// Cluster mode: who runs what.
    pub cluster: Option<ClusterView>,
}

fn esc(text: &str) -> String {
    passerelle_sdk::content::escape_html(text)
}

fn state_word(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Stopped => "stopped",
        _ => "unknown",
    }
}

/// "3 min ago", from two times in ms.
fn ago(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then) / 1000;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h {} min ago", secs / 3600, secs % 3600 / 60),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// A UTC time as `2026-12-01 14:27:04 UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl Page {
    /// The page as HTML.
    pub fn render(&self) -> String {
        let mut h = String::new();
        let version = env!("CARGO_PKG_VERSION");
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"10\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>passerelle status</title><style>\
             body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}\
             table{{border-collapse:collapse;margin-bottom:1.5em}}\
             th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
             th{{background:#f3f3f3}}td.n{{text-align:right}}td{{white-space:nowrap}}td.error{{white-space:normal}}\
             .connected{{color:#176b2c;font-weight:600}}.connecting{{color:#8a6d00;font-weight:600}}\
             .disconnected,.stopped{{color:#a8071a;font-weight:600}}.disabled,.elsewhere{{color:#777}}\
             </style></head><body>\n<h1>passerelle</h1>\n\
             <p id=\"version\">version {version} · {} · refreshes every 10 s</p>\n",
            utc(self.now_ms)
        );
        // Cluster mode: an account another instance runs is shown as elsewhere, with its owner.
        let elsewhere =
            |id: &AccountId| self.cluster.as_ref().is_some_and(|c| !c.held.contains(id));
        let here: Vec<&AccountRow> = self.accounts.iter().filter(|a| !elsewhere(&a.id)).collect();
        let up = here
            .iter()
            .filter(|a| {
                a.line
                    .as_ref()
                    .is_some_and(|l| l.state == ConnectionState::Connected)
            })
            .count();
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                h,
                "<p id=\"cluster\">Cluster mode: this is instance <b>{}</b>; it runs {} of the {} \
                 accounts, the others run at the instance named beside them.</p>",
                esc(&c.instance),
                here.len(),
                self.accounts.len()
            );
        }
        let (owner_head, waiting_head) = if self.cluster.is_some() {
            (
                "<th>Runs at</th>",
                "<th title=\"callbacks proved and kept here or at another instance, waiting for the owner\">Calls waiting</th>",
            )
        } else {
            ("", "")
        };
        let _ = write!(
            h,
            "<h2>Accounts</h2>\n<p id=\"summary\">{up} of {} connected</p>\n<table id=\"accounts\">\
             <tr><th>Account</th><th>Kind</th>{owner_head}<th>State</th><th>Since</th><th>Last error</th>\
             <th>In, last hour</th><th>Out, last hour</th>{waiting_head}</tr>\n",
            here.len()
        );
        for a in &self.accounts {
            let (owner, waiting) = match &self.cluster {
                Some(c) => {
                    let name = c.owners.get(&a.id).cloned().flatten();
                    let shown = name.as_deref().map(esc).unwrap_or_else(|| "nobody".into());
                    (
                        format!(
                            "<td data-owner=\"{}\">{shown}</td>",
                            esc(name.as_deref().unwrap_or(""))
                        ),
                        format!(
                            "<td class=\"n\">{}</td>",
                            c.waiting.get(&a.id).copied().unwrap_or(0)
                        ),
                    )
                }
                None => (String::new(), String::new()),
            };
            let (state, since, error) = match (&a.line, a.enabled) {
                (_, false) => ("disabled".to_owned(), String::new(), String::new()),
                _ if elsewhere(&a.id) => ("elsewhere".to_owned(), String::new(), String::new()),
                (None, true) => ("not started".to_owned(), String::new(), String::new()),
                (Some(line), true) => (
                    state_word(line.state).to_owned(),
                    format!(
                        "<span title=\"{}\">{}</span>",
                        utc(line.since_ms),
                        ago(self.now_ms, line.since_ms)
                    ),
                    line.last_error
                        .as_ref()
                        .map(|(e, at)| format!("{} ({})", esc(e), ago(self.now_ms, *at)))
                        .unwrap_or_default(),
                ),
            };
            let class = if a.enabled {
                state.as_str()
            } else {
                "disabled"
            };
            let _ = writeln!(
                h,
                "<tr data-account=\"{id}\"><td>{id}</td><td>{kind}</td>{owner}\
                 <td class=\"{class}\" data-state=\"{state}\">{state}</td><td>{since}</td>\
                 <td class=\"error\">{error}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>{waiting}</tr>",
                a.last_hour.0,
                a.last_hour.1,
                id = esc(a.id.as_str()),
                kind = esc(&a.kind),
                class = esc(class),
                state = esc(&state),
            );
        }
        h.push_str("</table>\n<h2>Links</h2>\n");
        if self.links.is_empty() {
            h.push_str("<p>No links.</p>\n");
        } else {
            h.push_str(
                "<table id=\"links\"><tr><th>Link</th><th>Account</th><th>Room</th><th>Direction</th></tr>\n",
            );
            for l in &self.links {
                for (i, (account, room, direction)) in l.rooms.iter().enumerate() {
                    let name = if i == 0 {
                        format!("<td rowspan=\"{}\">{}</td>", l.rooms.len(), esc(&l.name))
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        h,
                        "<tr data-link=\"{}\">{name}<td>{}</td><td>{}</td><td>{direction}</td></tr>",
                        esc(&l.name),
                        esc(account),
                        esc(room)
                    );
                }
            }
            h.push_str(
                "</table>\n<p>in: the room's messages go into the link, nothing is sent to it; \
                 out: it receives only; inout: both.</p>\n",
            );
        }
        h.push_str("<h2>Queues</h2>\n");
        if self.rooms.is_empty() {
            h.push_str("<p id=\"queues-empty\">Nothing queued, nothing given up on.</p>\n");
        } else {
            h.push_str(
                "<table id=\"queues\"><tr><th>Account</th><th>Room</th><th>Queued</th><th>Dead letters</th></tr>\n",
            );
            for r in &self.rooms {
                let _ = writeln!(
                    h,
                    "<tr data-room=\"{a}/{room}\"><td>{a}</td><td>{room}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    r.queued,
                    r.dead,
                    a = esc(r.account.as_str()),
                    room = esc(r.room.as_str())
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str("</body></html>\n");
        h
    }
}

/// What the page is made from: the board, the accounts and links of the configuration in force
/// (replaced on reload), and the store's counts.
pub struct Source {
    /// Each account's state and last error.
    pub board: std::sync::Arc<Board>,
    configured: std::sync::RwLock<Vec<(AccountId, String, bool)>>,
    store: std::sync::Arc<dyn crate::store::Store>,
    portals: std::sync::Arc<crate::portals::PortalService>,
    /// Cluster mode: who owns what, and the calls kept for their owners.
    cluster: OnceLock<(
        crate::cluster::Cluster,
        Option<std::sync::Arc<crate::relay::Relays>>,
    )>,
}

fn direction_word(d: crate::config::Direction) -> &'static str {
    match d {
        crate::config::Direction::Inout => "inout",
        crate::config::Direction::In => "in",
        crate::config::Direction::Out => "out",
    }
}

impl Source {
    /// A source over `store` and the links `portals` has in force, showing no account until
    /// [`Source::configure`].
    pub fn new(
        board: std::sync::Arc<Board>,
        store: std::sync::Arc<dyn crate::store::Store>,
        portals: std::sync::Arc<crate::portals::PortalService>,
    ) -> Self {
        Self {
            board,
            configured: std::sync::RwLock::new(Vec::new()),
            store,
            portals,
            cluster: OnceLock::new(),
        }
    }

    /// Cluster mode: shows which instance runs each account, and the calls waiting for them.
    pub fn set_cluster(
        &self,
        cluster: crate::cluster::Cluster,
        relays: Option<std::sync::Arc<crate::relay::Relays>>,
    ) {
        let _ = self.cluster.set((cluster, relays));
    }

    /// Shows the accounts of `config`.
    pub fn configure(&self, config: &crate::config::Config) {
        let accounts = config
            .accounts
            .iter()
            .map(|(id, a)| (id.clone(), a.kind.clone(), a.enabled))
            .collect();
        *self.configured.write().unwrap_or_else(|e| e.into_inner()) = accounts;
    }

    /// The page now. A store that can't be read shows no queue counts (and says so in the log).
    pub async fn page(&self) -> Page {
        let rooms = match self.store.room_counts().await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::error!(error = %e, "status page: cannot read the queue counts");
                Vec::new()
            }
        };
        let links = self
            .portals
            .links_in_force()
            .await
            .iter()
            .map(|l| LinkRow {
                name: l.name.clone(),
                rooms: l
                    .rooms
                    .iter()
                    .map(|r| {
                        (
                            r.account.to_string(),
                            r.room.to_string(),
                            direction_word(r.direction),
                        )
                    })
                    .collect(),
            })
            .collect();
        let accounts: Vec<AccountRow> = self
            .configured
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, kind, enabled)| AccountRow {
                id: id.clone(),
                kind: kind.clone(),
                line: self.board.get(id),
                last_hour: traffic().last_hour(id),
                enabled: *enabled,
            })
            .collect();
        let cluster = match self.cluster.get() {
            Some((cluster, relays)) => Some(ClusterView::read(cluster, relays.as_deref()).await),
            None => None,
        };
        Page {
            accounts,
            links,
            rooms,
            now_ms: now_ms(),
            cluster,
        }
    }
}

/// Cluster mode's part of the page.
pub struct ClusterView {
    /// This instance's name.
    pub instance: String,
    /// The accounts this instance runs.
    pub held: std::collections::BTreeSet<AccountId>,
    /// Each account's owner by name (`None`: no live owner); empty when the database can't be
    /// asked.
    pub owners: std::collections::HashMap<AccountId, Option<String>>,
    /// Callbacks kept and waiting for each account's owner.
    pub waiting: std::collections::HashMap<AccountId, i64>,
}

impl ClusterView {
    async fn read(
        cluster: &crate::cluster::Cluster,
        relays: Option<&crate::relay::Relays>,
    ) -> Self {
        let owners = match cluster.owners().await {
            Ok(owners) => owners
                .into_iter()
                .map(|o| {
                    let owner = o.instance.filter(|_| o.expires_in_ms > 0);
                    (o.account, owner)
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "status page: cannot read who owns what");
                Default::default()
            }
        };
        let waiting = match relays {
            Some(r) => r.waiting().await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "status page: cannot read the kept callbacks");
                Vec::new()
            }),
            None => Vec::new(),
        };
        Self {
            instance: cluster.name().to_owned(),
            held: cluster.held().into_keys().collect(),
            owners,
            waiting: waiting.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_counts_only_the_last_sixty_minutes() {
        let mut h = Hourly {
            slots: [(0, 0); MINUTES],
        };
        h.add(1000);
        h.add(1000);
        h.add(1030);
        h.add(1059);
        assert_eq!(h.last_hour(1059), 4);
        // Minute 1000 is out of the window at 1060, and its slot is reused at 1060.
        assert_eq!(h.last_hour(1060), 2);
        h.add(1060);
        assert_eq!(h.last_hour(1060), 3);
        assert_eq!(h.last_hour(2000), 0);
    }

    #[test]
    fn names_are_escaped_and_dates_are_civil() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_135_224_000), "2026-12-01 14:27:04 UTC");
        assert_eq!(ago(10_000, 0), "10 s ago");
        assert_eq!(ago(7_260_000, 0), "2 h 1 min ago");
    }

    #[test]
    fn an_error_is_cut_and_control_characters_are_dropped() {
        let board = Board::default();
        let id = AccountId::new("irc");
        board.state(&id, ConnectionState::Connecting);
        board.error(&id, &format!("bad\r\nline{}", "x".repeat(500)));
        let line = board.get(&id).expect("known");
        let (text, _) = line.last_error.expect("error");
        assert!(text.starts_with("badline"));
        assert!(text.chars().count() <= MAX_ERROR + 1);
    }
}
