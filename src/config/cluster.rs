//! `[cluster]`: several daemons with this same configuration sharing the accounts through the
//! PostgreSQL store (`src/cluster.rs`, docs/scaling.md).

use super::{AccountConfig, StoreConfig};
use passerelle_sdk::{AccountId, ConfigIssue};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Share the accounts with the other daemons on the same PostgreSQL store (`store.url`):
    /// each account runs on one instance at a time, taken over by another when that one dies.
    #[serde(default)]
    pub enabled: bool,
    /// This instance's name, unique among the live instances. Default: the host name (a
    /// container's is its id).
    #[serde(default)]
    pub instance: Option<String>,
    /// Seconds an instance's leases last without renewal (renewed every third of it): how long
    /// its accounts stay away after it dies. 3 to 600.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Accounts pinned to an instance by name (`{ "irc.libera" = "bridge-1" }`): there while
    /// that instance is alive, anywhere otherwise. The others are spread evenly.
    #[serde(default)]
    pub prefer: BTreeMap<AccountId, String>,
}

fn default_lease_secs() -> u64 {
    15
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            instance: None,
            lease_secs: default_lease_secs(),
            prefer: BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// This instance's name: `instance`, else the host name.
    pub fn instance_name(&self) -> String {
        if let Some(name) = self.instance.as_deref().filter(|n| !n.trim().is_empty()) {
            return name.trim().to_owned();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "passerelle".to_owned())
    }
}

/// The problems of `[cluster]` against the rest of the configuration.
pub(super) fn check(
    cluster: &ClusterConfig,
    store: &StoreConfig,
    accounts: &BTreeMap<AccountId, AccountConfig>,
    issues: &mut Vec<ConfigIssue>,
) {
    if !(3..=600).contains(&cluster.lease_secs) {
        issues.push(ConfigIssue::new(
            "cluster.lease_secs",
            "must be from 3 to 600",
        ));
    }
    if let Some(name) = &cluster.instance
        && (name.len() > 64 || name.contains('#') || name.chars().any(char::is_control))
    {
        issues.push(ConfigIssue::new(
            "cluster.instance",
            "at most 64 characters, without '#' or control characters",
        ));
    }
    for (account, instance) in &cluster.prefer {
        if !accounts.contains_key(account) {
            issues.push(ConfigIssue::new(
                format!("cluster.prefer.{account}"),
                "no such account",
            ));
        } else if instance.trim().is_empty() {
            issues.push(ConfigIssue::new(
                format!("cluster.prefer.{account}"),
                "an instance name is needed",
            ));
        }
    }
    if !cluster.enabled {
        return;
    }
    if store.url.is_none() && store.url_file.is_none() {
        issues.push(ConfigIssue::new(
            "cluster.enabled",
            "cluster mode needs the PostgreSQL store the instances share: set store.url_file (or store.url)",
        ));
    }
    // Every instance must open what any other queued, and sign links any other can check.
    if store.outbox_key.is_none() && store.outbox_key_file.is_none() {
        issues.push(ConfigIssue::new(
            "store.outbox_key_file",
            "cluster mode needs the same outbox key on every instance: set store.outbox_key_file (or store.outbox_key); a generated key would differ",
        ));
    }
}
