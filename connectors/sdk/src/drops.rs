//! Inbound data a connector refuses before it becomes an event (a stanza nested too deep, a
//! transaction entry that can't be read): counted in the daemon's own
//! `passerelle_drops_total{account,reason}`, so an operator sees every drop in one series.
//! The reason is a fixed string; nothing of the dropped data is ever a label.

use crate::ids::AccountId;

/// Counts one inbound item of `account` dropped for `reason` (a fixed, snake_case word).
pub fn inbound(account: &AccountId, reason: &'static str) {
    metrics::counter!(
        "passerelle_drops_total",
        "account" => account.as_str().to_owned(),
        "reason" => reason
    )
    .increment(1);
}
