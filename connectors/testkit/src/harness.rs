//! Runs one connector the way the daemon does, with in-memory channels and state, so a test can
//! feed it outbound events and read what it emits.

use futures::future::BoxFuture;
use passerelle_sdk::{
    AccountId, ConnectionState, Connector, ConnectorError, ConnectorIo, Disposition, Emitter,
    Event, HttpMount, Inbound, Outbound, Receipt, RoomId, SendError, StateBackend, StateError,
    StateHandle, StatusReporter,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Connector state kept in memory.
#[derive(Default)]
pub struct MemoryState(Mutex<HashMap<(String, String), Vec<u8>>>);

impl StateBackend for MemoryState {
    fn get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StateError>> {
        let value = self
            .0
            .lock()
            .map(|m| m.get(&(account.to_string(), key.to_owned())).cloned())
            .map_err(|_| StateError("poisoned".into()));
        Box::pin(async move { value })
    }

    fn put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), StateError>> {
        let r = self
            .0
            .lock()
            .map(|mut m| {
                m.insert((account.to_string(), key.to_owned()), value);
            })
            .map_err(|_| StateError("poisoned".into()));
        Box::pin(async move { r })
    }

    fn delete(&self, account: &AccountId, key: &str) -> BoxFuture<'static, Result<(), StateError>> {
        let r = self
            .0
            .lock()
            .map(|mut m| {
                m.remove(&(account.to_string(), key.to_owned()));
            })
            .map_err(|_| StateError("poisoned".into()));
        Box::pin(async move { r })
    }
}

/// A running connector under test.
pub struct Harness {
    inbound: mpsc::UnboundedReceiver<Event>,
    outbound: mpsc::Sender<Outbound>,
    status: watch::Receiver<ConnectionState>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ConnectorError>>>,
    http: HttpMount,
    account: AccountId,
    state: StateHandle,
}

impl Harness {
    /// Starts `connector` for `account` in `rooms`.
    pub fn start(connector: Box<dyn Connector>, account: &str, rooms: Vec<RoomId>) -> Self {
        Self::start_with_state(connector, account, rooms, Arc::new(MemoryState::default()))
    }

    /// Starts `connector` with the state `state`, which an earlier run may have written (a
    /// restart).
    pub fn start_with_state(
        connector: Box<dyn Connector>,
        account: &str,
        rooms: Vec<RoomId>,
        state: Arc<MemoryState>,
    ) -> Self {
        let account_name = account.to_owned();
        let (in_tx, in_rx) = mpsc::channel(256);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (status, status_rx) = StatusReporter::new();
        let shutdown = CancellationToken::new();
        let account = AccountId::new(account);
        let http = HttpMount::new();
        let state = StateHandle::new(account.clone(), state);
        let mut io = ConnectorIo {
            account: account.clone(),
            room_updates: passerelle_sdk::RoomUpdates::fixed(rooms.clone()),
            rooms,
            emitter: Emitter::new(account.clone(), in_tx),
            outbound: passerelle_sdk::OutboundQueue::new(out_rx),
            state: state.clone(),
            status,
            shutdown: shutdown.clone(),
            http: http.clone(),
            daemon: passerelle_sdk::DaemonView::default(),
            links: passerelle_sdk::Links::unavailable(account.clone()),
        };
        let task = tokio::spawn(async move { connector.run(&mut io).await });
        // Acknowledge every event at once, as the daemon does once it has stored it.
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(forward(in_rx, events_tx));
        Self {
            inbound: events_rx,
            outbound: out_tx,
            status: status_rx,
            shutdown,
            task: Some(task),
            http,
            account: AccountId::new(account_name),
            state,
        }
    }

    /// The connector's state, as the connector sees it.
    pub fn state(&self) -> StateHandle {
        self.state.clone()
    }

    /// Serves the connector's HTTP endpoints (see [`HttpMount`]) on 127.0.0.1:`port` until the
    /// harness shuts down: under `/accounts/{account}/` and at `/hooks/{account}` as the daemon
    /// does, and at the root too.
    pub async fn serve_http(&self, port: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the loopback port is free");
        let mount = self.http.clone();
        let stop = self.shutdown.clone();
        let account = self.account.to_string();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let mount = mount.clone();
            let account = account.clone();
            async move { crate::http_bridge::forward(&mount, req, 16 * 1024 * 1024, &account).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
    }

    /// Waits until the connector reports [`ConnectionState::Connected`].
    pub async fn wait_connected(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(
            timeout,
            self.status.wait_for(|s| *s == ConnectionState::Connected),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// The next event the connector emits (each is acknowledged as queued for one destination).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.inbound.recv())
            .await
            .ok()?
    }

    /// The next event matching `pred`, skipping others (membership noise and the like).
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await?;
            if pred(&event) {
                return Some(event);
            }
        }
    }

    /// Asks the connector to send `event`, and waits for its answer. `None`: no answer in time.
    pub async fn send(
        &mut self,
        event: Event,
        timeout: Duration,
    ) -> Option<Result<Receipt, SendError>> {
        let (outbound, answer) = Outbound::new(
            event,
            AccountId::new("testkit.origin"),
            "conformance".into(),
        );
        self.outbound.send(outbound).await.ok()?;
        tokio::time::timeout(timeout, answer).await.ok()?.ok()
    }

    /// What `run` returned, if it has returned by itself (without shutdown being signalled).
    pub async fn finished(&mut self) -> Option<Result<(), ConnectorError>> {
        if !self.task.as_ref()?.is_finished() {
            return None;
        }
        self.task.take()?.await.ok()
    }

    /// Waits (up to `timeout`) for `run` to return by itself, and returns what it returned.
    pub async fn wait_finished(&mut self, timeout: Duration) -> Option<Result<(), ConnectorError>> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(result) = self.finished().await {
                return Some(result);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Signals shutdown and returns what `run` returned. `None`: it did not return in time.
    pub async fn shutdown(&mut self, timeout: Duration) -> Option<Result<(), ConnectorError>> {
        self.shutdown.cancel();
        let task = self.task.take()?;
        tokio::time::timeout(timeout, task).await.ok()?.ok()
    }
}

async fn forward(mut rx: mpsc::Receiver<Inbound>, tx: mpsc::UnboundedSender<Event>) {
    while let Some(inbound) = rx.recv().await {
        let Inbound { event, ack, .. } = inbound;
        if let Some(ack) = ack {
            let _ = ack.send(Ok(Disposition::Queued { destinations: 1 }));
        }
        if tx.send(event).is_err() {
            return;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
