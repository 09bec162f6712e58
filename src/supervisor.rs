//! The supervisor: one task per enabled account. It runs the account's connector and, when the
//! connector fails with a retryable error, rebuilds and restarts it with exponential backoff (reset
//! once a connection has held for a minute). A fatal error stops that account only.

use crate::metrics;
use crate::registry::BuiltAccount;
use backon::BackoffBuilder;
use passerelle_sdk::{ConnectionState, ConnectorIo};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a connection must last before the backoff starts again from its minimum.
const STABLE_AFTER: Duration = Duration::from_secs(60);

fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs one account until shutdown or a fatal error.
pub async fn supervise(
    account: BuiltAccount,
    mut io: ConnectorIo,
    status: watch::Receiver<ConnectionState>,
) {
    let BuiltAccount {
        id,
        factory,
        context,
        table,
        connector,
    } = account;
    let watcher = tokio::spawn(watch_status(id.to_string(), status));
    let mut connector = Some(connector);
    let mut delays = backoff();
    loop {
        let current = match connector.take() {
            Some(c) => c,
            None => match factory.build(&context, table.clone()) {
                Ok(c) => c,
                Err(issues) => {
                    tracing::error!(account = %id, issues = issues.len(), "connector no longer builds; account stopped");
                    break;
                }
            },
        };
        io.status.set(ConnectionState::Connecting);
        let started = Instant::now();
        tracing::info!(account = %id, "connector starting");
        let result = current.run(&mut io).await;
        // Its HTTP endpoints answer 503 until it runs again.
        io.http.clear();
        if io.shutdown.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => {
                tracing::warn!(account = %id, "connector returned before shutdown; restarting");
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(account = %id, error = %e, "connector failed; will restart");
            }
            Err(e) => {
                tracing::error!(account = %id, error = %e, "connector failed fatally; account stopped");
                break;
            }
        }
        io.status.set(ConnectionState::Disconnected);
        metrics::reconnect(id.as_str());
        if started.elapsed() >= STABLE_AFTER {
            delays = backoff();
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(60));
        tracing::info!(account = %id, delay_ms = delay.as_millis() as u64, "reconnecting after backoff");
        tokio::select! {
            _ = io.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    io.status.set(ConnectionState::Stopped);
    watcher.abort();
    metrics::connected(id.as_str(), false);
}

async fn watch_status(account: String, mut status: watch::Receiver<ConnectionState>) {
    loop {
        let up = *status.borrow_and_update() == ConnectionState::Connected;
        metrics::connected(&account, up);
        if status.changed().await.is_err() {
            return;
        }
    }
}
