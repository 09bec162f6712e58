use super::*;
use serde_json::json;

fn issues_of(value: serde_json::Value) -> Vec<String> {
    from_value(value)
        .err()
        .unwrap_or_default()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

#[test]
fn a_minimal_config_is_valid_with_defaults() {
    let c = from_value(json!({
        "accounts": {"api.a": {"kind": "api"}, "api.b": {"kind": "api", "rights": ["read"]}},
        "links": [{"name": "l", "rooms": [{"account": "api.a", "room": "x"}, {"account": "api.b", "room": "y", "direction": "in"}]}]
    }))
    .unwrap();
    assert_eq!(c.general.remote_nick_format, "<{nick}> ");
    let a = &c.accounts[&AccountId::new("api.a")];
    assert!(a.rights.read && a.rights.write && !a.rights.delete);
    let b = &c.accounts[&AccountId::new("api.b")];
    assert!(b.rights.read && !b.rights.write);
    assert_eq!(c.links[0].rooms[1].direction, Direction::In);
    assert_eq!(
        rooms_of(&c, &AccountId::new("api.b")),
        vec![RoomId::new("y")]
    );
}

#[test]
fn every_issue_is_reported_at_once_with_its_path() {
    let issues = issues_of(json!({
        "bogus": 1,
        "general": {"remote_nick_fromat": "x"},
        "http": {"listen": "nowhere"},
        "accounts": {"irc.main": {"rights": ["read", "admin"]}},
        "links": [{"name": "l", "rooms": [{"account": "ghost", "room": "#a", "direction": "sideways"}]}]
    }));
    let joined = issues.join("\n");
    for expected in [
        "bogus: unknown key",
        "general.remote_nick_fromat: unknown key",
        "http.listen: not a socket address",
        "accounts.\"irc.main\".kind: missing",
        "accounts.\"irc.main\".rights[1]: unknown right",
        "links[0].rooms[0].direction: unknown variant",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    let issues = issues_of(json!({
        "accounts": {"a": {"kind": "api"}},
        "links": [{"name": "l", "rooms": [{"account": "a", "room": "x"}, {"account": "b", "room": "y"}]}]
    }));
    assert_eq!(
        issues,
        vec!["links[0].rooms[1].account: no account \"b\" in [accounts]"]
    );
}

#[test]
fn a_database_url_is_checked_and_never_shown() {
    let base = json!({"accounts": {"api.a": {"kind": "api"}}});
    let with_store = |store: serde_json::Value| {
        let mut v = base.clone();
        v["store"] = store;
        issues_of(v)
    };
    assert!(
        with_store(json!({"url": "postgres://bridge:s3cret@db.example.org:5432/passerelle"}))
            .is_empty()
    );
    assert!(
        with_store(json!({"url": "host=db.example.org user=bridge dbname=passerelle"})).is_empty()
    );
    let issues = with_store(json!({"url": "mysql://bridge:s3cret@db.example.org/passerelle"}));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        issues[0].starts_with("store.url: not a PostgreSQL URL"),
        "{issues:?}"
    );
    assert!(
        with_store(json!({"url": "postgres://bridge:s3cret@db.example.org/p?sslmode=require"}))
            .is_empty()
    );
    let issues = with_store(json!({
        "url": "postgres://bridge:s3cret@db.example.org/p",
        "tls_ca_file": "/etc/passerelle/db-ca.pem"
    }));
    assert!(
        issues[0].starts_with(
            "store.tls_ca_file: TLS to the database is used only with sslmode=require in store.url"
        ),
        "{issues:?}"
    );
    let issues = with_store(json!({
        "url": "postgres://bridge:s3cret@db.example.org/p?sslmode=require",
        "tls_ca_file": "/nonexistent/db-ca.pem"
    }));
    assert!(
        issues[0].starts_with("store.tls_ca_file: /nonexistent/db-ca.pem"),
        "{issues:?}"
    );
    let issues =
        with_store(json!({"url": "postgres://bridge:s3cret@db.example.org/p", "pool_size": 0}));
    assert!(issues[0].starts_with("store.pool_size"), "{issues:?}");
    let issues = with_store(json!({"url": "postgres://bridge:s3cret@db.example.org:99999/p"}));
    assert!(
        issues[0].starts_with("store.url: not a PostgreSQL URL"),
        "{issues:?}"
    );
    assert!(!issues[0].contains("s3cret"), "{issues:?}");
    let issues = with_store(json!({"url_file": "/nonexistent/passerelle-url"}));
    assert!(issues[0].starts_with("store.url_file"), "{issues:?}");
    let mut v = base.clone();
    v["store"] = json!({"url": "postgres://bridge:s3cret@db.example.org/p?sslmode=require"});
    assert!(!format!("{:?}", from_value(v.clone()).err()).contains("s3cret"));
    v["store"] = json!({"url": "postgres://bridge:s3cret@db.example.org/p"});
    let config = from_value(v).unwrap();
    assert!(!format!("{:?}", config.store).contains("s3cret"));
}

#[test]
fn cluster_mode_needs_the_shared_store_and_one_outbox_key() {
    let with = |cluster: serde_json::Value, store: serde_json::Value| {
        issues_of(json!({
            "accounts": {"irc.libera": {"kind": "api"}},
            "store": store,
            "cluster": cluster,
        }))
    };
    let shared = json!({
        "url": "postgres://bridge:s3cret@db.example.org:5432/passerelle",
        "outbox_key_file": "/run/secrets/passerelle-outbox-key",
    });
    assert!(
        with(
            json!({"enabled": true, "prefer": {"irc.libera": "bridge-1.example.org"}}),
            shared.clone()
        )
        .is_empty()
    );
    let issues = with(json!({"enabled": true}), json!({}));
    assert!(
        issues.iter().any(|i| i.starts_with("cluster.enabled")),
        "{issues:?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("store.outbox_key_file")),
        "{issues:?}"
    );
    let issues = with(json!({"enabled": true, "lease_secs": 1}), shared.clone());
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].starts_with("cluster.lease_secs"), "{issues:?}");
    let issues = with(json!({"prefer": {"irc.oftc": "bridge-1"}}), shared.clone());
    assert!(
        issues[0].starts_with("cluster.prefer.irc.oftc"),
        "{issues:?}"
    );
    let issues = with(json!({"instance": "bridge#1"}), shared);
    assert!(issues[0].starts_with("cluster.instance"), "{issues:?}");
    // Off (the default), nothing is asked of the store.
    assert!(with(json!({}), json!({})).is_empty());
}
