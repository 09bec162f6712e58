//! The `[[links]]` tables: checked room by room, and the links that would fan a private chat out.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    name: String,
    /// Parsed one by one, so every room's problems are reported.
    rooms: Vec<serde_json::Value>,
    #[serde(default)]
    private_fanout: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinkRoom {
    account: String,
    room: String,
    #[serde(default = "default_direction")]
    direction: Direction,
}

fn default_direction() -> Direction {
    Direction::Inout
}

pub(super) fn parse_links(
    raw: Option<serde_json::Value>,
    accounts: &BTreeMap<AccountId, AccountConfig>,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<LinkConfig> {
    let mut links = Vec::new();
    let Some(raw) = raw else {
        return links;
    };
    let serde_json::Value::Array(items) = raw else {
        issues.push(ConfigIssue::new(
            "links",
            "must be an array of tables ([[links]])",
        ));
        return links;
    };
    let mut names = BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let here = format!("links[{i}]");
        let link = match parse_table::<RawLink>(item) {
            Ok(l) => l,
            Err(issue) => {
                issues.push(issue.under(&here));
                continue;
            }
        };
        if link.name.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{here}.name"),
                "must not be empty",
            ));
        } else if !names.insert(link.name.clone()) {
            issues.push(ConfigIssue::new(
                format!("{here}.name"),
                format!("duplicate link name {:?}", link.name),
            ));
        }
        if link.rooms.len() < 2 {
            issues.push(ConfigIssue::new(
                format!("{here}.rooms"),
                "a link needs at least two rooms",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut rooms = Vec::new();
        for (j, room) in link.rooms.into_iter().enumerate() {
            let room_here = format!("{here}.rooms[{j}]");
            let room = match parse_table::<RawLinkRoom>(room) {
                Ok(r) => r,
                Err(issue) => {
                    issues.push(issue.under(&room_here));
                    continue;
                }
            };
            let account = AccountId::new(room.account);
            if !accounts.contains_key(&account) {
                issues.push(ConfigIssue::new(
                    format!("{room_here}.account"),
                    format!("no account {:?} in [accounts]", account.as_str()),
                ));
            }
            if room.room.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{room_here}.room"),
                    "must not be empty",
                ));
            }
            if !seen.insert((account.clone(), room.room.clone())) {
                issues.push(ConfigIssue::new(
                    format!("{room_here}.room"),
                    "the same room is listed twice in this link",
                ));
            }
            rooms.push(LinkRoom {
                account,
                room: RoomId::new(room.room),
                direction: room.direction,
                private: false,
            });
        }
        links.push(LinkConfig {
            name: link.name,
            rooms,
            private_fanout: link.private_fanout,
        });
    }
    links
}

/// Where the links would carry one person's private chat to more than one place without the
/// operator's word (`private_fanout = true` on the link): a link joining two private rooms, or a
/// private room that is in more than one link. Each is `(link index, room index, why)`. The route
/// table and the route guard leave such links out; `check` refuses them.
pub fn private_fanout_issues(links: &[LinkConfig]) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    for (i, link) in links.iter().enumerate() {
        if link.private_fanout {
            continue;
        }
        let private: Vec<usize> = (0..link.rooms.len())
            .filter(|&j| link.rooms[j].private)
            .collect();
        for (n, &j) in private.iter().enumerate() {
            let room = &link.rooms[j];
            if n > 0 {
                let first = &link.rooms[private[0]];
                found.push((
                    i,
                    j,
                    format!(
                        "{} on {} and {} on {} are both one person's private chat: this link would                          carry each one's messages into the other's inbox. Link each to a room of                          its own, or say private_fanout = true on the link if that is meant",
                        first.room, first.account, room.room, room.account
                    ),
                ));
            }
            if let Some(other) = links.iter().enumerate().find(|(k, l)| {
                *k != i
                    && l.rooms
                        .iter()
                        .any(|r| r.account == room.account && r.room == room.room)
            }) {
                found.push((
                    i,
                    j,
                    format!(
                        "{} on {} is one person's private chat and is in link {:?} too: its                          messages would go to both. Keep it in one link, or say                          private_fanout = true on each if that is meant",
                        room.room,
                        room.account,
                        other.1.name
                    ),
                ));
            }
        }
    }
    found
}

/// The links that may not be used: they would fan a private chat out without the operator's
/// word (see [`private_fanout_issues`]).
pub fn blocked_links(links: &[LinkConfig]) -> std::collections::HashSet<usize> {
    private_fanout_issues(links)
        .into_iter()
        .map(|(i, _, _)| i)
        .collect()
}
