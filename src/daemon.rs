//! Wiring: builds the store, router, lanes and supervisors from a validated configuration, runs
//! them, and shuts them down in order on SIGINT or SIGTERM:
//! 1. keep taking and delivering events until the outbox is empty or `shutdown_grace_secs`
//!    passes;
//! 2. stop taking inbound events (connectors' `emit` answers "shutting down");
//! 3. stop the lanes, letting each finish the send it has handed over;
//! 4. stop the connectors and everything else, and wait for their tasks.
//!
//! Whatever is still queued stays in the outbox and is delivered on the next start.

use crate::bus::{Delivery, Lanes};
use crate::config::Config;
use crate::http::{self, AdminState};
use crate::metrics;
use crate::registry::{self, BuiltAccount};
use crate::router::Policies;
use crate::router::guard::RouteGuard;
use crate::router::table::RouteTable;
use crate::router::{AccountPolicy, Router};
use crate::store::seal::Sealer;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreState};
use crate::supervisor;
use anyhow::Context;
use passerelle_sdk::{
    ConnectorIo, DaemonView, Emitter, HttpMount, LinkSummary, StateHandle, StatusReporter,
    Timestamp,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Capacity of the inbound queue shared by all connectors (they wait when it is full).
const INBOUND_CAPACITY: usize = 1024;
/// Capacity of each account's outbound queue.
const OUTBOUND_CAPACITY: usize = 64;

/// Runs the daemon until `shutdown` is cancelled (the binary cancels it on SIGINT/SIGTERM).
pub async fn run(
    mut config: Config,
    built: Vec<BuiltAccount>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // The configured port is taken before anything else starts, so that a port already in use
    // stops the daemon at once with an error naming `http.listen`, before any connector connects.
    let admin_listener = match config.http.listen_addr() {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.listen: cannot listen on {addr}"))?,
        )),
        None => None,
    };
    let public_listener = match config.http.public_addr() {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.public_listen: cannot listen on {addr}"))?,
        )),
        None => None,
    };
    let prometheus = metrics::install();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&config.store.path)
            .with_context(|| format!("store.path: cannot open {}", config.store.path.display()))?,
    );
    let sealer = Arc::new(
        Sealer::load(
            config.store.outbox_key.as_ref(),
            config.store.outbox_key_file.as_deref(),
            &config.store.data_dir().join("outbox.key"),
        )
        .context("store: outbox key")?,
    );

    let pastes = crate::pastes::Pastes::new(
        &config.pastes,
        &config.store.data_dir(),
        sealer.clone(),
        store.clone(),
    )
    .context("pastes: the key file beside the database")?
    .map(Arc::new);

    let policies: Arc<Policies> = Arc::new(
        config
            .accounts
            .iter()
            .map(|(id, account)| {
                let connector = built.iter().find(|b| &b.id == id).map(|b| &b.connector);
                (
                    id.clone(),
                    AccountPolicy {
                        enabled: account.enabled,
                        rights: account.rights,
                        capabilities: connector.map(|c| c.capabilities()).unwrap_or_default(),
                        limits: connector.map(|c| c.limits()).unwrap_or_default(),
                        remote_nick_format: account.remote_nick_format.clone(),
                    },
                )
            })
            .collect(),
    );

    let intake = CancellationToken::new();
    let lanes_stop = CancellationToken::new();
    let stop = CancellationToken::new();
    let lane_tasks = TaskTracker::new();
    let tasks = TaskTracker::new();
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);

    // Links made at run time before (portals) join the configured ones, each checked again
    // against the configuration as it is now.
    let configured = config.links.clone();
    let portal_pairs = registry::portal_pairs(&config, &built);
    for (name, rooms) in store
        .dynamic_links()
        .await
        .context("store: reading kept links")?
    {
        if config.links.iter().any(|l| l.name == name) {
            tracing::warn!(link = %name, "a kept portal has the name of a configured link; not used");
            continue;
        }
        match crate::portals::parse_kept(&name, &rooms, &configured, &policies, &portal_pairs) {
            Ok(link) => config.links.push(link),
            Err(why) => {
                tracing::warn!(link = %name, reason = %why, "a kept portal no longer fits the configuration; not used")
            }
        }
    }
    let table = Arc::new(std::sync::RwLock::new(RouteTable::build(
        &config.links,
        &policies,
    )));
    let guard = Arc::new(std::sync::RwLock::new(RouteGuard::build(
        &config.links,
        &policies,
    )));
    let portals = Arc::new(crate::portals::PortalService::new(
        store.clone(),
        configured,
        config.links.clone(),
        policies.clone(),
        portal_pairs,
        table.clone(),
        guard.clone(),
    ));

    let mut outbound = HashMap::new();
    let mut ios = Vec::new();
    let mut statuses = Vec::new();
    let mut mounts = HashMap::new();
    for account in built {
        if !config.accounts.get(&account.id).is_some_and(|a| a.enabled) {
            tracing::info!(account = %account.id, "account disabled; not started");
            continue;
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        outbound.insert(account.id.clone(), tx);
        let (status, status_rx) = StatusReporter::new();
        statuses.push((account.id.clone(), status_rx.clone()));
        let io = ConnectorIo {
            account: account.id.clone(),
            rooms: crate::config::rooms_of(&config, &account.id),
            emitter: Emitter::new(account.id.clone(), inbound_tx.clone()),
            outbound: passerelle_sdk::OutboundQueue::new(rx),
            state: StateHandle::new(account.id.clone(), Arc::new(StoreState(store.clone()))),
            status,
            shutdown: stop.child_token(),
            http: HttpMount::new(),
            daemon: DaemonView::default(),
            links: passerelle_sdk::Links::new(
                account.id.clone(),
                Arc::new(crate::portals::SharedPortals(portals.clone())),
            ),
        };
        mounts.insert(account.id.clone(), io.http.clone());
        ios.push((account, io, status_rx));
    }
    drop(inbound_tx);
    // The dead letters kept from earlier runs, newest first, then those of this run.
    let dead_letters = passerelle_sdk::DeadLetterLog::default();
    for letter in store
        .dead_letters(passerelle_sdk::DeadLetterLog::KEPT)
        .await
        .context("store: reading the dead letters")?
        .into_iter()
        .rev()
    {
        dead_letters.push(letter);
    }
    let view = DaemonView::with_dead_letters(
        ios.iter()
            .map(|(account, _, rx)| {
                let kind = config
                    .accounts
                    .get(&account.id)
                    .map(|a| a.kind.clone())
                    .unwrap_or_default();
                (account.id.clone(), kind, rx.clone())
            })
            .collect(),
        config
            .links
            .iter()
            .map(|l| LinkSummary {
                name: l.name.clone(),
                rooms: l
                    .rooms
                    .iter()
                    .map(|r| (r.account.clone(), r.room.clone()))
                    .collect(),
            })
            .collect(),
        dead_letters.clone(),
    );
    for (_, io, _) in ios.iter_mut() {
        io.daemon = view.clone();
    }

    // Kept until the connectors have stopped, so that their outbound queues never close under them
    // while the lanes wind down.
    let outbound_keepalive = outbound.clone();
    let pending_receipts = crate::mapping::PendingReceipts::default();
    let delivery = Arc::new(Delivery {
        store: store.clone(),
        sealer: sealer.clone(),
        guard,
        policies: policies.clone(),
        outbound,
        general: config.general.clone(),
        stop: lanes_stop.clone(),
        recorder: crate::bus::Recorder::start(store.clone(), pending_receipts.clone(), &lane_tasks),
        pending_receipts,
        pastes: pastes.clone(),
        dead_letters: dead_letters.clone(),
    });
    let lanes = Lanes::new(delivery, lane_tasks.clone());
    for (account, queued) in store
        .pending_by_account()
        .await
        .context("store: reading the outbox")?
    {
        metrics::queue_depth(account.as_str(), queued as f64);
    }
    for (account, room) in store
        .pending_destinations()
        .await
        .context("store: reading the outbox")?
    {
        lanes.ensure(&account, &room);
    }
    let router = Router::new(table, policies.clone(), store.clone(), sealer, lanes)
        .with_moderation(config.general.bridge_moderation);
    lane_tasks.spawn(router.run(inbound_rx, intake.clone()));
    for (account, io, status_rx) in ios {
        tasks.spawn(supervisor::supervise(account, io, status_rx));
    }

    let state = AdminState {
        accounts: Arc::new(statuses),
        prometheus,
        mounts: Arc::new(mounts),
        pastes: pastes.clone(),
        dead_letters: dead_letters.clone(),
    };
    let split = public_listener.is_some();
    let listeners = [
        admin_listener.map(|(addr, l)| {
            let app = if split {
                http::admin_router(state.clone())
            } else {
                http::router(state.clone())
            };
            ("http.listen", addr, l, app)
        }),
        public_listener.map(|(addr, l)| {
            (
                "http.public_listen",
                addr,
                l,
                http::public_router(state.clone()),
            )
        }),
    ];
    for (key, addr, listener, app) in listeners.into_iter().flatten() {
        let http_stop = stop.clone();
        tasks.spawn(async move {
            let name = passerelle_sdk::AccountId::new(key);
            let limits = passerelle_sdk::front::FrontLimits::default();
            if let Err(e) =
                passerelle_sdk::front::serve(listener, app, limits, &name, http_stop).await
            {
                tracing::error!(error = %e, listener = key, "listener failed");
            }
        });
        tracing::info!(%addr, listener = key, "listener up");
    }

    let retention = Duration::from_secs(u64::from(config.store.retention_days) * 86_400);
    let purge_store = store.clone();
    let purge_stop = stop.clone();
    let purge_pastes = pastes.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = purge_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            ticks += 1;
            if let Some(pastes) = &purge_pastes {
                match pastes.purge().await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "expired pastes deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "paste purge failed"),
                }
            }
            // The message map every hour.
            if ticks % 6 != 1 {
                continue;
            }
            let cutoff = Timestamp(
                Timestamp::now()
                    .0
                    .saturating_sub(retention.as_millis() as u64),
            );
            match purge_store.purge_before(cutoff).await {
                Ok(n) if n > 0 => {
                    tracing::info!(removed = n, "message map rows past retention removed")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention purge failed"),
            }
        }
    });

    tracing::info!(
        startup_ms = started.elapsed().as_millis() as u64,
        "passerelle running"
    );
    shutdown.cancelled().await;

    // Inbound events are still taken during the grace period: a network that can't redeliver
    // (IRC) would otherwise lose what arrives now. They are stored, so nothing taken is lost.
    tracing::info!("shutting down: delivering what is queued");
    let grace = Duration::from_secs(config.general.shutdown_grace_secs);
    let deadline = Instant::now() + grace;
    loop {
        match store.pending_count().await {
            Ok(0) => break,
            Ok(n) if Instant::now() >= deadline => {
                tracing::warn!(
                    queued = n,
                    "grace period over; the rest stays queued for the next start"
                );
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox while draining");
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    intake.cancel();
    // Lanes next: each finishes the send it has handed over and records it.
    lanes_stop.cancel();
    lane_tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), lane_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some delivery lanes did not stop within 10 s");
    }
    stop.cancel();
    tasks.close();
    // Connectors may wait for their servers to close the link (IRC relays what we sent first).
    if tokio::time::timeout(Duration::from_secs(15), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 15 s");
    }
    drop(outbound_keepalive);
    tracing::info!("stopped");
    Ok(())
}

/// Loads and fully validates a configuration (core and every connector), returning every issue.
pub fn load(
    path: &std::path::Path,
) -> Result<(Config, Vec<BuiltAccount>), Vec<passerelle_sdk::ConfigIssue>> {
    let (mut config, mut issues) = crate::config::load_lenient(path);
    let (built, more) = registry::build_all(&config);
    issues.extend(more);
    issues.extend(registry::check_rooms(&config, &built));
    registry::mark_private_rooms(&mut config, &built);
    issues.extend(registry::check_private_fanout(&config));
    if issues.is_empty() {
        Ok((config, built))
    } else {
        Err(issues)
    }
}
