//! The explicit table from `kind` to connector factory: one `cfg(feature)` line per connector.
//! Adding a network means adding its crate, its feature, and one line here.

use crate::config::Config;
use passerelle_sdk::{
    AccountId, BuildContext, ConfigIssue, Connector, ConnectorFactory, config::path_key,
};
use std::sync::Arc;

/// Every factory compiled into this build.
#[allow(clippy::vec_init_then_push)] // one cfg'd line per connector reads best
pub fn factories() -> Vec<Arc<dyn ConnectorFactory>> {
    #[allow(unused_mut)]
    let mut all: Vec<Arc<dyn ConnectorFactory>> = Vec::new();
    #[cfg(feature = "passerelle-api")]
    all.push(Arc::new(passerelle_api::ApiFactory));
    #[cfg(feature = "passerelle-irc")]
    all.push(Arc::new(passerelle_irc::IrcFactory));
    #[cfg(feature = "passerelle-matrix")]
    all.push(Arc::new(passerelle_matrix::MatrixFactory));
    #[cfg(feature = "passerelle-xmpp")]
    all.push(Arc::new(passerelle_xmpp::XmppFactory));
    #[cfg(feature = "passerelle-meta")]
    all.push(Arc::new(passerelle_meta::WHATSAPP));
    #[cfg(feature = "passerelle-meta")]
    all.push(Arc::new(passerelle_meta::MESSENGER));
    #[cfg(feature = "passerelle-meta")]
    all.push(Arc::new(passerelle_meta::INSTAGRAM));
    #[cfg(feature = "passerelle-telegram")]
    all.push(Arc::new(passerelle_telegram::TelegramFactory));
    #[cfg(feature = "passerelle-signal")]
    all.push(Arc::new(passerelle_signal::SignalFactory));
    #[cfg(feature = "passerelle-process")]
    all.push(Arc::new(passerelle_process::ProcessFactory));
    #[cfg(feature = "passerelle-discord")]
    all.push(Arc::new(passerelle_discord::DiscordFactory));
    #[cfg(feature = "passerelle-slack")]
    all.push(Arc::new(passerelle_slack::SlackFactory));
    #[cfg(feature = "passerelle-mattermost")]
    all.push(Arc::new(passerelle_mattermost::MattermostFactory));
    all
}

/// The documented example configuration for this build (`passerelle example-config`;
/// `config.example.toml` is exactly this): the core's sections, every compiled kind's example
/// ([`ConnectorFactory::example`], each once), then the links.
pub fn example_config() -> String {
    let mut out = String::from(include_str!("config/example_head.toml"));
    let mut seen: Vec<&'static str> = Vec::new();
    for factory in factories() {
        let example = factory.example();
        if !seen.contains(&example) {
            seen.push(example);
            out.push('\n');
            out.push_str(example.trim_end_matches('\n'));
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(include_str!("config/example_links.toml"));
    out
}

/// The factory for `kind`, if this build has it.
pub fn factory(kind: &str) -> Option<Arc<dyn ConnectorFactory>> {
    factories().into_iter().find(|f| f.kind() == kind)
}

/// An account whose connector was built from its config.
pub struct BuiltAccount {
    /// The account.
    pub id: AccountId,
    /// Its factory, kept to rebuild the connector after a failure.
    pub factory: Arc<dyn ConnectorFactory>,
    /// What the factory was given.
    pub context: BuildContext,
    /// The connector's own table, kept to rebuild.
    pub table: serde_json::Value,
    /// The built connector.
    pub connector: Box<dyn Connector>,
}

/// Builds every account's connector (enabled or not, so `check` validates all): the ones that
/// build, and every issue of the others with its full key path.
pub fn build_all(config: &Config) -> (Vec<BuiltAccount>, Vec<ConfigIssue>) {
    let mut issues = Vec::new();
    let mut built = Vec::new();
    let data_dir = config.store.data_dir();
    for (id, account) in &config.accounts {
        let here = format!("accounts.{}", path_key(id.as_str()));
        let Some(factory) = factory(&account.kind) else {
            let known: Vec<&str> = factories().iter().map(|f| f.kind()).collect();
            issues.push(ConfigIssue::new(
                format!("{here}.kind"),
                format!(
                    "unknown kind {:?} (this build knows: {})",
                    account.kind,
                    known.join(", ")
                ),
            ));
            continue;
        };
        let context = BuildContext {
            account: id.clone(),
            data_dir: data_dir.join("accounts").join(id.as_str()),
        };
        match factory.build(&context, account.table.clone()) {
            Ok(connector) => built.push(BuiltAccount {
                id: id.clone(),
                factory,
                context,
                table: account.table.clone(),
                connector,
            }),
            Err(found) => issues.extend(found.into_iter().map(|i| i.under(&here))),
        }
    }
    (built, issues)
}

/// Asks each account's connector whether the rooms the links give it can be rooms on its network.
pub fn check_rooms(config: &Config, built: &[BuiltAccount]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (i, link) in config.links.iter().enumerate() {
        for (j, room) in link.rooms.iter().enumerate() {
            let Some(account) = built.iter().find(|b| b.id == room.account) else {
                continue;
            };
            if let Err(why) = account.connector.check_room(&room.room) {
                issues.push(ConfigIssue::new(format!("links[{i}].rooms[{j}].room"), why));
            }
        }
    }
    issues
}

/// Marks every room of the links that its connector says is one person's private chat
/// ([`passerelle_sdk::Connector::room_kind`]).
pub fn mark_private_rooms(config: &mut Config, built: &[BuiltAccount]) {
    for room in config.links.iter_mut().flat_map(|l| l.rooms.iter_mut()) {
        room.private = built
            .iter()
            .find(|b| b.id == room.account)
            .is_some_and(|b| {
                b.connector.room_kind(&room.room) == passerelle_sdk::RoomKind::Private
            });
    }
}

/// The links that would carry one person's private chat to more than one place without
/// `private_fanout = true`, each under its room's key path.
pub fn check_private_fanout(config: &Config) -> Vec<ConfigIssue> {
    crate::config::private_fanout_issues(&config.links)
        .into_iter()
        .map(|(i, j, why)| ConfigIssue::new(format!("links[{i}].rooms[{j}].room"), why))
        .collect()
}

/// Which accounts may open portals to which: `(from, to)` when `from`'s connector lets its users
/// open rooms of `to` ([`passerelle_sdk::Connector::opens_portals_to`]).
pub fn portal_pairs(
    config: &Config,
    built: &[BuiltAccount],
) -> std::collections::HashSet<(AccountId, AccountId)> {
    let mut pairs = std::collections::HashSet::new();
    for b in built {
        for to in config.accounts.keys() {
            if *to != b.id && b.connector.opens_portals_to(to) {
                pairs.insert((b.id.clone(), to.clone()));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The code of a source file, without comments and without its unit tests (which may name
    /// accounts after networks).
    fn code_of(text: &str) -> String {
        let mut code = String::new();
        for line in text.lines() {
            if line.trim_start() == "#[cfg(test)]" {
                break;
            }
            let line = match line.find("//") {
                // A `//` inside a string (a URL) stays: only comments are cut.
                Some(i) if !line[..i].contains('"') => &line[..i],
                _ => line,
            };
            code.push_str(line);
            code.push('\n');
        }
        code
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// What names a network in code: a connector crate's path, or its kind as a string.
    fn mentions(code: &str, kinds: &[&str], crates: &[String]) -> Vec<String> {
        let mut found: Vec<String> = crates
            .iter()
            .filter(|c| code.contains(&format!("{c}::")))
            .cloned()
            .collect();
        found.extend(
            kinds
                .iter()
                .filter(|k| code.contains(&format!("\"{k}\"")))
                .map(|k| format!("\"{k}\"")),
        );
        found
    }

    /// `src/` names no network: the daemon knows connectors only through this registry, so a
    /// network is added (or taken away) here and in its own folder, nowhere else.
    #[test]
    fn no_code_outside_the_registry_names_a_network() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let kinds: Vec<&str> = factories().iter().map(|f| f.kind()).collect();
        assert!(kinds.len() >= 2, "the registry lists {kinds:?}");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
        let crates: Vec<String> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("passerelle-"))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| !matches!(*name, "sdk" | "testkit"))
            .map(|name| format!("passerelle_{name}"))
            .collect();
        assert!(crates.iter().any(|c| c == "passerelle_irc"), "{crates:?}");
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        assert!(files.len() > 10, "found {} files under src/", files.len());
        let mut offenders = Vec::new();
        for file in files {
            if file.ends_with("src/registry.rs")
                || file
                    .file_name()
                    .is_some_and(|n| n == "tests.rs" || n == "proptests.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let found = mentions(&code_of(&text), &kinds, &crates);
            if !found.is_empty() {
                offenders.push(format!("{}: {}", file.display(), found.join(", ")));
            }
        }
        assert!(
            offenders.is_empty(),
            "network names in src/:\n{}",
            offenders.join("\n")
        );
    }

    /// The keys a kind's `build` accepts, as its parser names them when refusing an unknown one.
    fn accepted_keys(factory: &dyn ConnectorFactory) -> Vec<String> {
        let context = BuildContext {
            account: AccountId::new("probe"),
            data_dir: std::env::temp_dir().join("passerelle-probe"),
        };
        let table = serde_json::json!({ "zz_not_a_key": true });
        let issues = match factory.build(&context, table) {
            Ok(_) => panic!("{} accepted an unknown key", factory.kind()),
            Err(issues) => issues,
        };
        let issue = issues
            .iter()
            .find(|i| i.path == "zz_not_a_key")
            .unwrap_or_else(|| panic!("{}: {issues:?}", factory.kind()));
        issue
            .message
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    /// Whether `word` stands alone in `text` (not inside a longer key name).
    fn names(text: &str, word: &str) -> bool {
        let part = |c: char| c.is_ascii_alphanumeric() || c == '_';
        text.match_indices(word).any(|(i, _)| {
            !text[..i].chars().next_back().is_some_and(part)
                && !text[i + word.len()..].chars().next().is_some_and(part)
        })
    }

    /// The keys an example sets or shows commented out (`key = ...`, `# key = ...`) in an
    /// account's table itself; a subtable (`[accounts."x".settings]`, the program's own) is not
    /// the kind's.
    fn keys_written(example: &str) -> Vec<String> {
        let mut in_account = true;
        let mut keys = Vec::new();
        for line in example.lines() {
            let line = line.trim_start_matches(['#', ' ']);
            if let Some(header) = line.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                // Quoted names may hold dots: count the segments outside quotes.
                let unquoted: String = header.split('"').step_by(2).collect();
                in_account = header.starts_with("accounts.") && unquoted.matches('.').count() == 1;
                continue;
            }
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            if in_account
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                keys.push(key.to_owned());
            }
        }
        keys
    }

    /// The keys every account has, read by the daemon before the connector sees the table.
    const COMMON_KEYS: [&str; 4] = ["kind", "enabled", "rights", "remote_nick_format"];

    /// Each kind ships its documented example; it names every key the kind accepts and writes no
    /// key the kind refuses.
    #[test]
    fn every_kind_documents_every_key_it_accepts_in_its_example() {
        let mut problems = Vec::new();
        for factory in factories() {
            let kind = factory.kind();
            let example = factory.example();
            if !example.contains(&format!("kind = \"{kind}\"")) {
                problems.push(format!("{kind}: its example has no table of its kind"));
            }
            let accepted = accepted_keys(factory.as_ref());
            assert!(accepted.len() >= 3, "{kind}: {accepted:?}");
            let undocumented: Vec<&String> =
                accepted.iter().filter(|k| !names(example, k)).collect();
            if !undocumented.is_empty() {
                problems.push(format!(
                    "{kind}: keys its example does not name: {undocumented:?}"
                ));
            }
            let refused: Vec<String> = keys_written(example)
                .into_iter()
                .filter(|k| !accepted.contains(k) && !COMMON_KEYS.contains(&k.as_str()))
                .collect();
            if !refused.is_empty() {
                problems.push(format!(
                    "{kind}: its example writes keys it refuses: {refused:?}"
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// `config.example.toml` is what `passerelle example-config` writes: the core's parts and
    /// every kind's example, each once, so a connector's example reaches it without an edit.
    #[test]
    fn config_example_is_what_example_config_writes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = std::fs::read_to_string(root.join("config.example.toml")).unwrap_or_default();
        let generated = example_config();
        for factory in factories() {
            assert!(generated.contains(factory.example()), "{}", factory.kind());
        }
        assert!(
            file == generated,
            "config.example.toml is out of date: run `cargo run -- example-config > config.example.toml`"
        );
    }

    /// Each example, as a configuration file of its own, passes `passerelle check`.
    #[test]
    fn each_kinds_example_passes_check_on_its_own() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for factory in factories() {
            let file = dir.path().join(format!("{}.toml", factory.kind()));
            let text = format!(
                "[store]\npath = {:?}\n\n{}",
                dir.path().join("data/passerelle.db").display().to_string(),
                factory.example()
            );
            std::fs::write(&file, text).expect("written");
            match crate::daemon::load(&file) {
                Ok((_, built)) => assert!(
                    built.iter().any(|b| b.factory.kind() == factory.kind()),
                    "{}: its example built no account of its kind",
                    factory.kind(),
                ),
                Err(issues) => panic!("{}: {issues:?}", factory.kind()),
            }
        }
    }

    #[test]
    fn the_example_checks_see_missing_and_refused_keys() {
        let example = "[accounts.\"x.y\"]\n# server_port = 1\nnick = \"a\"\n\
                       # the nick_format is ...\n[accounts.\"x.y\".settings]\ndir = \"d\"\n";
        assert_eq!(keys_written(example), ["server_port", "nick"]);
        assert!(names(example, "nick_format"));
        assert!(!names(example, "server"), "server_port is not server");
        assert!(!names(example, "port"));
    }

    #[test]
    fn the_check_sees_a_kind_and_a_crate_path_in_code_but_not_in_comments() {
        let kinds = ["matrix"];
        let crates = ["passerelle_matrix".to_owned()];
        let code =
            code_of("let a = 1; // \"matrix\" passerelle_matrix::x\nif kind == \"matrix\" {}\n");
        assert_eq!(mentions(&code, &kinds, &crates), ["\"matrix\""]);
        let code = code_of("passerelle_matrix::registration(t)\n#[cfg(test)]\n\"matrix\"\n");
        assert_eq!(mentions(&code, &kinds, &crates), ["passerelle_matrix"]);
    }
}
