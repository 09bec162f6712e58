//! The supervisor: one task per enabled account. It runs the account's connector and, when the
//! connector fails with a retryable error, rebuilds and restarts it with exponential backoff (reset
//! once a connection has held for a minute). A fatal error stops that account only.

use crate::metrics;
use crate::registry::BuiltAccount;
use backon::BackoffBuilder;
use passerelle_sdk::{ConnectionState, ConnectorIo};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// Cluster mode's hold on an account: it runs only while this instance owns it.
pub struct Gate {
    /// Whether this instance owns the account now.
    pub owned: watch::Receiver<bool>,
    /// Set while the connector runs (cleared once a run has ended).
    pub running: watch::Sender<bool>,
}

impl Gate {
    /// Waits until the account is owned. False when it never will be (the sender is gone) or
    /// `stop` came first.
    async fn wait_owned(&mut self, stop: &CancellationToken) -> bool {
        loop {
            if *self.owned.borrow_and_update() {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                changed = self.owned.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// Returns once the account is no longer owned.
    async fn lost(&mut self) {
        loop {
            if !*self.owned.borrow_and_update() {
                return;
            }
            if self.owned.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

async fn lost(gate: &mut Option<Gate>) {
    match gate {
        Some(g) => g.lost().await,
        None => std::future::pending().await,
    }
}

/// What a reload may change of a running account: its connector's own table and its rooms.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountSpec {
    /// The connector's own table.
    pub table: serde_json::Value,
    /// The rooms the links place on it.
    pub rooms: Vec<passerelle_sdk::RoomId>,
}

/// Runs one account until `stop` is cancelled or a fatal error. Each run of the connector has a
/// shutdown token of its own (a child of `stop`): when `updates` brings another table, or other
/// rooms to a connector that does not follow room changes, that run is stopped and the connector
/// rebuilt from the new spec at once (the outbound queue, and what it holds, stay). Rooms alone
/// go to a connector that follows them through `io.room_updates`, on the connection it has.
/// With a `gate` (cluster mode) the connector runs only while this instance owns the account:
/// it waits for ownership, and is stopped at once when ownership is lost.
#[allow(clippy::too_many_arguments)]
pub async fn supervise(
    account: BuiltAccount,
    mut io: ConnectorIo,
    status: watch::Receiver<ConnectionState>,
    stop: CancellationToken,
    mut updates: watch::Receiver<AccountSpec>,
    rooms_tx: watch::Sender<Vec<passerelle_sdk::RoomId>>,
    board: std::sync::Arc<crate::status::Board>,
    mut gate: Option<Gate>,
) {
    let BuiltAccount {
        id,
        factory,
        context,
        table,
        connector,
    } = account;
    let mut spec = AccountSpec {
        table,
        rooms: io.rooms.clone(),
    };
    let watcher = tokio::spawn(watch_status(id.clone(), status, board.clone()));
    let mut connector = Some(connector);
    let mut delays = backoff();
    loop {
        if let Some(g) = gate.as_mut() {
            if !*g.owned.borrow() {
                io.status.set(ConnectionState::Stopped);
                tracing::info!(account = %id, "cluster: another instance owns the account; waiting");
            }
            if !g.wait_owned(&stop).await {
                break;
            }
            g.running.send_replace(true);
        }
        let current = match connector.take() {
            Some(c) => c,
            None => match factory.build(&context, spec.table.clone()) {
                Ok(c) => c,
                Err(issues) => {
                    board.error(
                        &id,
                        &format!("the connector no longer builds ({} problems)", issues.len()),
                    );
                    tracing::error!(account = %id, issues = issues.len(), "connector no longer builds; account stopped");
                    break;
                }
            },
        };
        let follows = current.follows_room_changes();
        io.rooms = spec.rooms.clone();
        rooms_tx.send_replace(spec.rooms.clone());
        io.room_updates = rooms_subscriber(&rooms_tx);
        let run_stop = stop.child_token();
        io.shutdown = run_stop.clone();
        io.status.set(ConnectionState::Connecting);
        let started = Instant::now();
        tracing::info!(account = %id, "connector starting");
        let mut rebuild = false;
        let mut disowned = false;
        let result = {
            let run = current.run(&mut io);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    result = &mut run => break result,
                    () = lost(&mut gate), if !disowned => {
                        tracing::info!(account = %id, "cluster: the account is no longer ours: stopping its connector");
                        disowned = true;
                        run_stop.cancel();
                    }
                    changed = updates.changed(), if !rebuild => {
                        if changed.is_err() {
                            // No more updates can come: wait for the run alone.
                            break run.await;
                        }
                        let next = updates.borrow_and_update().clone();
                        if next == spec {
                            continue;
                        }
                        if next.table != spec.table || !follows {
                            tracing::info!(account = %id, "configuration changed: restarting the connector");
                            rebuild = true;
                            run_stop.cancel();
                        } else {
                            tracing::info!(account = %id, rooms = next.rooms.len(), "rooms changed: handed to the running connector");
                            rooms_tx.send_replace(next.rooms.clone());
                        }
                        spec = next;
                    }
                }
            }
        };
        // Its HTTP endpoints answer 503 until it runs again.
        io.http.clear();
        if let Some(g) = gate.as_ref() {
            g.running.send_replace(false);
        }
        if stop.is_cancelled() {
            break;
        }
        if disowned {
            io.status.set(ConnectionState::Stopped);
            connector = None;
            delays = backoff();
            continue;
        }
        if rebuild {
            // Stopped for the new configuration, not failed: rebuilt at once.
            io.status.set(ConnectionState::Disconnected);
            delays = backoff();
            continue;
        }
        match result {
            Ok(()) => {
                tracing::warn!(account = %id, "connector returned before shutdown; restarting");
            }
            Err(e) if e.is_retryable() => {
                board.error(&id, &e.to_string());
                tracing::warn!(account = %id, error = %e, "connector failed; will restart");
            }
            Err(e) => {
                board.error(&id, &e.to_string());
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
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
            // A new configuration is tried at once.
            changed = updates.changed() => {
                if changed.is_ok() {
                    spec = updates.borrow_and_update().clone();
                }
            }
        }
    }
    if let Some(g) = gate.as_ref() {
        g.running.send_replace(false);
    }
    io.status.set(ConnectionState::Stopped);
    board.state(&id, ConnectionState::Stopped);
    watcher.abort();
    metrics::connected(id.as_str(), false);
}

/// A receiver of `rooms_tx` that has seen its current value.
fn rooms_subscriber(
    rooms_tx: &watch::Sender<Vec<passerelle_sdk::RoomId>>,
) -> passerelle_sdk::RoomUpdates {
    passerelle_sdk::RoomUpdates::from_receiver(rooms_tx.subscribe())
}

async fn watch_status(
    account: passerelle_sdk::AccountId,
    mut status: watch::Receiver<ConnectionState>,
    board: std::sync::Arc<crate::status::Board>,
) {
    loop {
        let state = *status.borrow_and_update();
        metrics::connected(account.as_str(), state == ConnectionState::Connected);
        board.state(&account, state);
        if status.changed().await.is_err() {
            return;
        }
    }
}
