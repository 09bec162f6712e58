//! The daemon's metrics, exported in Prometheus format on `/metrics`. Labels are account names
//! and fixed reasons only: never content, never user ids.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): then ours only renders zeros.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// An event entered the bus from `account`.
pub fn event_in(account: &str, kind: &'static str) {
    counter!("passerelle_events_in_total", "account" => account.to_owned(), "kind" => kind)
        .increment(1);
}

/// An event was delivered to `account`.
pub fn event_out(account: &str) {
    counter!("passerelle_events_out_total", "account" => account.to_owned()).increment(1);
}

/// An event (or one of its deliveries) was dropped, for a fixed reason.
pub fn dropped(account: &str, reason: &'static str) {
    counter!("passerelle_drops_total", "account" => account.to_owned(), "reason" => reason)
        .increment(1);
}

/// A delivery to `account` was given up on, for a fixed reason.
pub fn dead_letter(account: &str, reason: &'static str) {
    counter!("passerelle_dead_letters_total", "account" => account.to_owned(), "reason" => reason)
        .increment(1);
}

/// The number of deliveries queued for `account` changed by `delta`.
pub fn queue_depth(account: &str, delta: f64) {
    gauge!("passerelle_queue_depth", "account" => account.to_owned()).increment(delta);
}

/// `account`'s connector was restarted after a failure.
pub fn reconnect(account: &str) {
    counter!("passerelle_reconnects_total", "account" => account.to_owned()).increment(1);
}

/// A send to `account` took `seconds` from hand-over to receipt.
pub fn send_latency(account: &str, seconds: f64) {
    histogram!("passerelle_send_latency_seconds", "account" => account.to_owned()).record(seconds);
}

/// Whether `account` is connected (1) or not (0).
pub fn connected(account: &str, up: bool) {
    gauge!("passerelle_account_connected", "account" => account.to_owned()).set(if up {
        1.0
    } else {
        0.0
    });
}

/// Cluster mode: a callback for `account` was kept for its owner.
pub fn relay_kept(account: &str) {
    counter!("passerelle_relay_kept_total", "account" => account.to_owned()).increment(1);
}

/// Cluster mode: a kept callback for `account` was handed to its connector, which took it
/// (`outcome` "handled") or refused it ("refused", "unreadable"), and it was deleted.
pub fn relay_done(account: &str, outcome: &'static str) {
    counter!("passerelle_relay_done_total", "account" => account.to_owned(), "outcome" => outcome)
        .increment(1);
}
