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
use crate::config::{Config, LinkConfig};
use crate::http::{self, AdminState};
use crate::live::{Live, Settings};
use crate::metrics;
use crate::registry::{self, BuiltAccount};
use crate::router::Policies;
use crate::router::guard::RouteGuard;
use crate::router::table::RouteTable;
use crate::router::{AccountPolicy, Router};
use crate::store::postgres::PostgresStore;
use crate::store::seal::Sealer;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreState};
use crate::supervisor::{self, AccountSpec};
use anyhow::Context;
use dashmap::DashMap;
use passerelle_sdk::{
    AccountId, ConnectorIo, DaemonView, Emitter, HttpMount, LinkSummary, StateHandle,
    StatusReporter, Timestamp,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod account_files;
mod cluster;
mod reload;

use reload::reload;
pub use reload::{ReloadOutcome, ReloadReport, ReloadRequest};

/// Capacity of the inbound queue shared by all connectors (they wait when it is full).
const INBOUND_CAPACITY: usize = 1024;
/// Capacity of each account's outbound queue.
const OUTBOUND_CAPACITY: usize = 64;

/// How long the daemon waits at start for a PostgreSQL database that cannot be reached.
const DATABASE_PATIENCE: Duration = Duration::from_secs(300);

/// Opens the configured store: the PostgreSQL database `store.url` names, waiting for it while
/// it cannot be reached, or else the SQLite file at `store.path`.
pub async fn open_store(
    config: &crate::config::StoreConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<dyn Store>, Option<PostgresStore>)> {
    let key = if config.url_file.is_some() {
        "store.url_file"
    } else {
        "store.url"
    };
    match config
        .database_url()
        .map_err(|issue| anyhow::anyhow!("{issue}"))?
    {
        Some(url) => {
            let store = PostgresStore::connect_patiently(
                url.expose(),
                config.pool_size,
                config.tls_ca_file.as_deref(),
                DATABASE_PATIENCE,
                shutdown,
            )
            .await
            .with_context(|| format!("{key}: cannot open the database"))?;
            tracing::info!(database = store.name(), "store: PostgreSQL");
            Ok((Arc::new(store.clone()), Some(store)))
        }
        None => {
            Ok((
                Arc::new(SqliteStore::open_locked(&config.path).with_context(|| {
                    format!("store.path: cannot open {}", config.path.display())
                })?),
                None,
            ))
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled (the binary cancels it on SIGINT/SIGTERM).
/// `path` is the configuration file, read again on every request `reloads` brings (its sender is
/// what `POST /reload` uses).
pub async fn run(
    path: std::path::PathBuf,
    config: Config,
    built: Vec<BuiltAccount>,
    shutdown: CancellationToken,
    reloads: (mpsc::Sender<ReloadRequest>, mpsc::Receiver<ReloadRequest>),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (reload_tx, mut reload_rx) = reloads;
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
    let (store, postgres) = open_store(&config.store, &shutdown).await?;
    let cluster = match (&postgres, config.cluster.enabled) {
        (Some(pg), true) => {
            let lease = Duration::from_secs(config.cluster.lease_secs);
            let mut settings = crate::cluster::Settings::new(config.cluster.instance_name(), lease);
            settings.prefer = config.cluster.prefer.clone().into_iter().collect();
            let cluster = crate::cluster::Cluster::join(pg, settings)
                .await
                .context("cluster: cannot join")?;
            pg.announce_as(cluster.owner());
            tracing::info!(
                instance = cluster.name(),
                lease_secs = lease.as_secs(),
                "cluster: joined"
            );
            Some(cluster)
        }
        (None, true) => anyhow::bail!("cluster.enabled: cluster mode needs store.url"),
        _ => None,
    };
    let gates = cluster
        .as_ref()
        .map(|_| Arc::new(cluster::Gates::default()));
    let sealer = Arc::new(
        Sealer::load(
            config.store.outbox_key.as_ref(),
            config.store.outbox_key_file.as_deref(),
            &config.store.data_dir().join("outbox.key"),
        )
        .context("store: outbox key")?,
    );
    // Cluster mode: callbacks proved and kept at whichever instance they reach.
    let relays = match (&cluster, &postgres) {
        (Some(c), Some(pg)) => Some(Arc::new(crate::relay::Relays::new(
            pg.clone(),
            sealer.clone(),
            c.owner().to_owned(),
        ))),
        _ => None,
    };

    let pastes = crate::pastes::Pastes::new(
        &config.pastes,
        &config.store.data_dir(),
        sealer.clone(),
        store.clone(),
    )
    .context("pastes: the key file beside the database")?
    .map(Arc::new);

    let live = Live::new(policies_of(&config, &built), config.general.clone());
    let intake = CancellationToken::new();
    let lanes_stop = CancellationToken::new();
    let stop = CancellationToken::new();
    let lane_tasks = TaskTracker::new();
    let tasks = TaskTracker::new();
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);

    let table = Arc::new(std::sync::RwLock::new(RouteTable::build(
        &[],
        &live.now().policies,
    )));
    let guard = Arc::new(std::sync::RwLock::new(RouteGuard::build(
        &[],
        &live.now().policies,
    )));
    let portals = Arc::new(crate::portals::PortalService::new(
        store.clone(),
        live.clone(),
        table.clone(),
        guard.clone(),
    ));
    // Links made at run time before (portals) join the configured ones, each checked again
    // against the configuration as it is now.
    let links = portals
        .reconfigure(
            config.links.clone(),
            registry::portal_pairs(&config, &built),
            Vec::new(),
            Policies::default(),
        )
        .await
        .context("store: reading kept links")?;

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
    let (view, view_updater) = DaemonView::updatable(Vec::new(), Vec::new(), dead_letters.clone());

    let pending_receipts = crate::mapping::PendingReceipts::default();
    let outbound = Arc::new(DashMap::new());
    let delivery = Arc::new(Delivery {
        store: store.clone(),
        sealer: sealer.clone(),
        guard,
        live: live.clone(),
        outbound: outbound.clone(),
        stop: lanes_stop.clone(),
        recorder: crate::bus::Recorder::start(store.clone(), pending_receipts.clone(), &lane_tasks),
        pending_receipts,
        pastes: pastes.clone(),
        dead_letters: dead_letters.clone(),
        fence: cluster
            .clone()
            .map(|c| Arc::new(c) as Arc<dyn crate::bus::Fence>),
    });
    let board = Arc::new(crate::status::Board::default());
    let status = Arc::new(crate::status::Source::new(
        board.clone(),
        store.clone(),
        portals.clone(),
    ));
    status.configure(&config);
    if let Some(cluster) = &cluster {
        status.set_cluster(cluster.clone(), relays.clone());
    }
    let mut accounts = Accounts {
        board,
        running: HashMap::new(),
        outbound,
        statuses: Arc::new(std::sync::RwLock::new(Vec::new())),
        mounts: Arc::new(DashMap::new()),
        inbound: inbound_tx,
        store: store.clone(),
        portals: portals.clone(),
        view,
        view_updater,
        stop: stop.clone(),
        tasks: tasks.clone(),
        gates: gates.clone(),
        relays: relays.clone().zip(cluster.clone()),
    };
    let mut built = built;
    built.retain(|account| {
        let enabled = config.accounts.get(&account.id).is_some_and(|a| a.enabled);
        if !enabled {
            tracing::info!(account = %account.id, "account disabled; not started");
        }
        enabled
    });
    let to_start: Vec<(BuiltAccount, Vec<passerelle_sdk::RoomId>)> = built
        .into_iter()
        .map(|b| {
            let rooms = rooms_in(&links, &b.id);
            (b, rooms)
        })
        .collect();

    // The accounts first, so that every enabled account's queue is there before a lane looks.
    for (account, rooms) in to_start {
        let kind = config
            .accounts
            .get(&account.id)
            .map(|a| a.kind.clone())
            .unwrap_or_default();
        accounts.start(account, kind, rooms);
    }
    accounts.show(&links);

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
    if let (Some(cluster), Some(gates), Some(pg)) = (&cluster, &gates, &postgres) {
        gates.set(
            cluster.clone(),
            lanes.clone(),
            store.clone(),
            relays.clone(),
        );
        gates.set_files(sealer.clone(), config.store.data_dir().join("accounts"));
        let enabled: Vec<AccountId> = config
            .accounts
            .iter()
            .filter(|(_, a)| a.enabled)
            .map(|(id, _)| id.clone())
            .collect();
        let handler: Arc<dyn crate::cluster::Accounts> = gates.clone();
        let (c, stop_c) = (cluster.clone(), stop.clone());
        tasks.spawn(async move { c.run(enabled, handler, stop_c).await });
        tasks.spawn(cluster::follow_notices(
            pg.clone(),
            cluster.clone(),
            gates.clone(),
            stop.clone(),
        ));
        tasks.spawn(cluster::keep_files(gates.clone(), stop.clone()));
    }
    let router = Router::new(table, live.clone(), store.clone(), sealer, lanes);
    lane_tasks.spawn(router.run(inbound_rx, intake.clone()));

    let state = AdminState {
        accounts: accounts.statuses.clone(),
        prometheus,
        mounts: accounts.mounts.clone(),
        pastes: pastes.clone(),
        dead_letters: dead_letters.clone(),
        status: status.clone(),
        reload: reload_tx,
        cluster: cluster.clone(),
        relays: relays.clone(),
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
    let mut config = config;
    let mut raw = crate::config::read_raw(&path).ok();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = reload_rx.recv() => {
                let Some(request) = request else { continue };
                let outcome = reload(&path, &mut config, &mut raw, &mut accounts, &live, &shutdown).await;
                if outcome.is_ok() {
                    status.configure(&config);
                }
                match &outcome {
                    Ok(report) => tracing::info!(
                        started = report.started.len(),
                        restarted = report.restarted.len(),
                        rooms_changed = report.rooms_changed.len(),
                        stopped = report.stopped.len(),
                        unchanged = report.unchanged.len(),
                        links = report.links,
                        needs_restart = ?report.needs_restart,
                        "configuration reloaded"
                    ),
                    Err(issues) => {
                        tracing::error!(problems = issues.len(), "new configuration refused; the running one stays");
                        for issue in issues {
                            tracing::error!(path = %issue.path, "{}", issue.message);
                        }
                    }
                }
                if let Some(answer) = request.answer {
                    let _ = answer.send(outcome);
                }
            }
        }
    }

    // Inbound events are still taken during the grace period: a network that can't redeliver
    // (IRC) would otherwise lose what arrives now. They are stored, so nothing taken is lost.
    tracing::info!("shutting down: delivering what is queued");
    let grace = Duration::from_secs(config.general.shutdown_grace_secs);
    let deadline = Instant::now() + grace;
    loop {
        // In cluster mode, what is queued for the accounts this instance owns.
        let queued = match &cluster {
            None => store.pending_count().await,
            Some(c) => {
                let held = c.held();
                store.pending_by_account().await.map(|by| {
                    by.into_iter()
                        .filter(|(a, _)| held.contains_key(a))
                        .map(|(_, n)| n)
                        .sum()
                })
            }
        };
        match queued {
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
    // Kept until the connectors have stopped, so that their outbound queues never close under
    // them while the lanes wind down.
    drop(accounts);
    // The accounts are stopped: their directories' last copies, then the other instances may
    // take them at once.
    if let Some(gates) = &gates {
        gates.keep_all_files().await;
    }
    if let Some(cluster) = &cluster {
        match cluster.leave().await {
            Ok(()) => tracing::info!("cluster: leases given back"),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot give the leases back; they expire")
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Every account's policy, from its config and its built connector.
fn policies_of(config: &Config, built: &[BuiltAccount]) -> Policies {
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
        .collect()
}

/// The rooms `links` place on `account`, each once.
fn rooms_in(links: &[LinkConfig], account: &AccountId) -> Vec<passerelle_sdk::RoomId> {
    let mut rooms = Vec::new();
    for r in links.iter().flat_map(|l| l.rooms.iter()) {
        if &r.account == account && !rooms.contains(&r.room) {
            rooms.push(r.room.clone());
        }
    }
    rooms
}

/// One running account.
struct Running {
    kind: String,
    /// Its connector's table and rooms, which its supervisor follows.
    spec: watch::Sender<AccountSpec>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The running accounts, and what each one is registered in.
struct Accounts {
    /// Each account's state and last error, for `/status`.
    board: Arc<crate::status::Board>,
    running: HashMap<AccountId, Running>,
    /// Each running account's outbound queue, shared with the lanes (kept until the end: see
    /// `run`).
    outbound: Arc<DashMap<AccountId, mpsc::Sender<passerelle_sdk::Outbound>>>,
    statuses: http::AccountStates,
    mounts: Arc<DashMap<AccountId, HttpMount>>,
    inbound: mpsc::Sender<passerelle_sdk::Inbound>,
    store: Arc<dyn Store>,
    portals: Arc<crate::portals::PortalService>,
    view: DaemonView,
    view_updater: passerelle_sdk::ViewUpdater,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Cluster mode: each account runs only while this instance owns it.
    gates: Option<Arc<cluster::Gates>>,
    /// Cluster mode: each account's relay, and the cluster its pump asks who owns the account.
    relays: Option<(Arc<crate::relay::Relays>, crate::cluster::Cluster)>,
}

impl Accounts {
    /// Starts `account`'s supervisor on `rooms`.
    fn start(&mut self, account: BuiltAccount, kind: String, rooms: Vec<passerelle_sdk::RoomId>) {
        let id = account.id.clone();
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        self.outbound.insert(id.clone(), tx);
        let (status, status_rx) = StatusReporter::new();
        let account_stop = self.stop.child_token();
        let (rooms_tx, room_updates) = passerelle_sdk::RoomUpdates::new(rooms.clone());
        let io = ConnectorIo {
            account: id.clone(),
            rooms: rooms.clone(),
            room_updates,
            emitter: Emitter::new(id.clone(), self.inbound.clone()),
            outbound: passerelle_sdk::OutboundQueue::new(rx),
            state: StateHandle::new(id.clone(), self.state_backend()),
            status,
            shutdown: account_stop.clone(),
            http: HttpMount::new(),
            daemon: self.view.clone(),
            links: passerelle_sdk::Links::new(
                id.clone(),
                Arc::new(crate::portals::SharedPortals(self.portals.clone())),
            ),
        };
        self.mounts.insert(id.clone(), io.http.clone());
        if let Some((relays, cluster)) = &self.relays {
            relays.set(&id, account.connector.relay(&id));
            self.tasks.spawn(crate::relay::pump(
                relays.clone(),
                id.clone(),
                io.http.clone(),
                cluster.clone(),
                account_stop.clone(),
            ));
        }
        {
            let mut statuses = self.statuses.write().unwrap_or_else(|e| e.into_inner());
            statuses.retain(|(a, _)| a != &id);
            statuses.push((id.clone(), status_rx.clone()));
        }
        let (spec, spec_rx) = watch::channel(AccountSpec {
            table: account.table.clone(),
            rooms,
        });
        let task = self.tasks.spawn(supervisor::supervise(
            account,
            io,
            status_rx,
            account_stop.clone(),
            spec_rx,
            rooms_tx,
            self.board.clone(),
            self.gates.as_ref().map(|g| g.gate(&id)),
        ));
        self.running.insert(
            id,
            Running {
                kind,
                spec,
                stop: account_stop,
                task,
            },
        );
    }

    /// Where connectors keep their state: the store, behind the lease in cluster mode.
    fn state_backend(&self) -> Arc<dyn passerelle_sdk::StateBackend> {
        match &self.relays {
            Some((_, cluster)) => Arc::new(cluster::FencedState {
                store: self.store.clone(),
                cluster: cluster.clone(),
            }),
            None => Arc::new(StoreState(self.store.clone())),
        }
    }

    /// Stops `id`'s connector and forgets it.
    async fn stop(&mut self, id: &AccountId) {
        let Some(running) = self.running.remove(id) else {
            return;
        };
        running.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(15), running.task)
            .await
            .is_err()
        {
            tracing::warn!(account = %id, "connector did not stop within 15 s");
        }
        self.outbound.remove(id);
        self.mounts.remove(id);
        if let Some((relays, _)) = &self.relays {
            relays.set(id, None);
        }
        self.board.remove(id);
        self.statuses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _)| a != id);
    }

    /// Shows the running accounts and `links` to connectors (the Matrix admin room).
    fn show(&self, links: &[LinkConfig]) {
        let statuses = self.statuses.read().unwrap_or_else(|e| e.into_inner());
        let accounts = statuses
            .iter()
            .map(|(id, rx)| {
                let kind = self
                    .running
                    .get(id)
                    .map(|r| r.kind.clone())
                    .unwrap_or_default();
                (id.clone(), kind, rx.clone())
            })
            .collect();
        let links = links
            .iter()
            .map(|l| LinkSummary {
                name: l.name.clone(),
                rooms: l
                    .rooms
                    .iter()
                    .map(|r| (r.account.clone(), r.room.clone()))
                    .collect(),
            })
            .collect();
        self.view_updater.replace(accounts, links);
    }
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
