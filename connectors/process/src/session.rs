//! One run of the program: start it, shake hands, then carry emits, sends, state and status
//! until it exits or the daemon stops (`docs/connector-protocol.md`).

use crate::config::{Settings, capability_names};
use crate::lines::{self, Line};
use crate::wire::{self, FromProgram, Malformed, WireEvent};
use passerelle_sdk::{
    ConnectionState, ConnectorError, ConnectorIo, Disposition, EmitAck, EmitError, Event, Outbound,
    Receipt, RemoteMessageId, RoomId, SendError,
};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The longest stderr line kept for the log; longer ones are cut.
const LOG_LINE: usize = 1000;

/// The most lines queued for the program's stdin and not yet written.
const WRITE_QUEUE: usize = 4096;

/// The most sends handed to the program and not yet answered.
const SENDS_IN_FLIGHT: usize = 256;

/// The most emits handed to the daemon and not yet answered.
const EMITS_IN_FLIGHT: usize = 256;

/// Hands the program's emits to the daemon in order and sends each one's `emitted` answer, in
/// the same order, once the daemon stored (or refused) it.
async fn emit_in_order(
    emitter: passerelle_sdk::Emitter,
    mut emits: mpsc::Receiver<(Value, Event)>,
    answers: mpsc::Sender<Value>,
) {
    let mut in_flight: VecDeque<(Value, Result<EmitAck, EmitError>)> = VecDeque::new();
    loop {
        if in_flight.is_empty() {
            let Some((id, event)) = emits.recv().await else {
                return;
            };
            in_flight.push_back((id, emitter.submit(event).await));
        }
        while in_flight.len() < EMITS_IN_FLIGHT {
            let Ok((id, event)) = emits.try_recv() else {
                break;
            };
            in_flight.push_back((id, emitter.submit(event).await));
        }
        let Some((id, submitted)) = in_flight.pop_front() else {
            continue;
        };
        let result = match submitted {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let answer = match result {
            Ok(Disposition::Queued { .. }) => wire::emitted(&id, "stored", None),
            Ok(Disposition::Duplicate) => wire::emitted(&id, "duplicate", None),
            Ok(Disposition::Unrouted) => wire::emitted(&id, "unrouted", None),
            Ok(Disposition::Refused { reason }) => wire::emitted(&id, "refused", Some(reason)),
            Ok(_) => wire::emitted(&id, "refused", Some("not taken")),
            Err(EmitError::ShuttingDown) => {
                wire::emitted(&id, "error", Some("the daemon is shutting down"))
            }
            Err(_) => wire::emitted(&id, "error", Some("not stored")),
        };
        if answers.send(answer).await.is_err() {
            return;
        }
    }
}

/// Runs the program once.
pub async fn run(
    settings: &Settings,
    data_dir: &Path,
    io: &mut ConnectorIo,
) -> Result<(), ConnectorError> {
    io.status.set(ConnectionState::Connecting);
    let mut child = start(settings, data_dir)?;
    let account = io.account.clone();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ConnectorError::Fatal(
            "the program's pipes were not opened".into(),
        ));
    };
    let (line_tx, mut line_rx) = mpsc::channel::<Line>(64);
    tokio::spawn(lines::read(stdout, settings.max_line_bytes, line_tx));
    tokio::spawn(log_stderr(stderr, account.as_str().to_owned()));
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writer = tokio::spawn(write_lines(stdin, out_rx));
    let mut session = Session {
        out: Some(out_tx),
        io_account: account.as_str().to_owned(),
        pending: HashMap::new(),
        next_send: 0,
        rooms: io.rooms.clone(),
    };
    let result = session
        .serve(settings, data_dir, io, &mut line_rx, &mut child)
        .await;
    session.fail_pending();
    // The writer ends once what is queued (`shutdown` last) is written, and closes stdin.
    drop(session.out.take());
    stop(&mut child, writer, settings.shutdown_grace).await;
    io.status.set(ConnectionState::Disconnected);
    result
}

/// Starts the program: its argv, in the daemon's working directory (so relative paths in
/// `command` mean what they mean to the operator), with an empty environment but `PATH`, `LANG`
/// and the configured `env`. The account's data directory is made and named in `init`.
fn start(settings: &Settings, data_dir: &Path) -> Result<Child, ConnectorError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        ConnectorError::Fatal(format!("the account's data directory can't be made: {e}"))
    })?;
    let (program, args) = settings
        .command
        .split_first()
        .ok_or_else(|| ConnectorError::Config("command is empty".into()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env(
            "LANG",
            std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        )
        .envs(&settings.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            ConnectorError::Config(format!("command[0] {program:?} can't be started: {e}"))
        }
        _ => ConnectorError::Disconnected(format!("the program could not be started: {e}")),
    })
}

/// Logs the program's stderr, line by line, as the account's log; never read as protocol.
async fn log_stderr(stderr: tokio::process::ChildStderr, account: String) {
    let (tx, mut rx) = mpsc::channel::<Line>(64);
    tokio::spawn(lines::read(stderr, 64 * 1024, tx));
    while let Some(line) = rx.recv().await {
        match line {
            Line::Bytes(bytes) => {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(LOG_LINE)]);
                info!(account, program = %text, "program log");
            }
            Line::TooLong(len) => info!(account, len, "program log line too long to keep"),
        }
    }
}

/// Writes the queued lines to the program's stdin, in order, until the queue closes or a write
/// fails; then closes stdin.
async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Lets the program finish (its stdin closes once the writer is done), then kills it after the
/// grace.
async fn stop(child: &mut Child, writer: tokio::task::JoinHandle<()>, grace: Duration) {
    let deadline = Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, writer).await;
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => debug!(%status, "the program exited"),
        _ => {
            warn!("the program did not exit within shutdown_grace_secs: killed");
            let _ = child.kill().await;
        }
    }
}

/// A send handed to the program, waiting for its answer.
struct Pending {
    out: Outbound,
    since: Instant,
}

struct Session {
    /// Lines for the writer task: reading the program's output never waits on writing to it.
    out: Option<mpsc::Sender<Vec<u8>>>,
    io_account: String,
    pending: HashMap<String, Pending>,
    next_send: u64,
    rooms: Vec<RoomId>,
}

/// Why the session ended.
enum End {
    Shutdown,
    Exited(String),
}

impl Session {
    /// Queues one line for the program. A program that leaves [`WRITE_QUEUE`] lines unread
    /// (it does not read its stdin) ends the session.
    async fn write(&mut self, value: &Value) -> Result<(), ConnectorError> {
        let Some(out) = self.out.as_ref() else {
            return Err(ConnectorError::Disconnected(
                "the program's stdin is closed".into(),
            ));
        };
        let mut line = serde_json::to_vec(value)
            .map_err(|e| ConnectorError::Fatal(format!("a protocol line can't be written: {e}")))?;
        line.push(b'\n');
        out.try_send(line).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ConnectorError::Disconnected(format!(
                "the program left {WRITE_QUEUE} lines unread on its stdin"
            )),
            mpsc::error::TrySendError::Closed(_) => {
                ConnectorError::Disconnected("writing to the program failed".into())
            }
        })
    }

    fn malformed(&self, why: &Malformed) {
        passerelle_sdk::drops::inbound(
            &passerelle_sdk::AccountId::new(self.io_account.clone()),
            "process_malformed_line",
        );
        warn!(account = %self.io_account, why = %why.why(), "malformed line from the program: skipped");
    }

    /// Answers every send still waiting: `disconnected`, so the daemon sends it again.
    fn fail_pending(&mut self) {
        for (_, p) in self.pending.drain() {
            p.out.respond(Err(SendError::Disconnected));
        }
    }

    async fn serve(
        &mut self,
        settings: &Settings,
        data_dir: &Path,
        io: &mut ConnectorIo,
        lines: &mut mpsc::Receiver<Line>,
        child: &mut Child,
    ) -> Result<(), ConnectorError> {
        let init = wire::init(
            io.account.as_str(),
            &self.rooms,
            &settings.settings,
            data_dir,
        );
        self.write(&init).await?;
        self.handshake(settings, lines).await?;
        // Emits are handed to the daemon in the order written, by their own task, and answered
        // in that order once stored. What queued up while the oldest was being stored is handed
        // over together (up to EMITS_IN_FLIGHT), so the daemon stores a run in one transaction.
        let (emit_tx, emit_rx) = mpsc::channel::<(Value, Event)>(EMITS_IN_FLIGHT);
        let (answer_tx, mut answer_rx) = mpsc::channel::<Value>(EMITS_IN_FLIGHT);
        let emit_task = tokio::spawn(emit_in_order(io.emitter.clone(), emit_rx, answer_tx));
        let mut connected = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let end = loop {
            tokio::select! {
                _ = io.shutdown.cancelled() => break End::Shutdown,
                status = child.wait() => {
                    break End::Exited(match status {
                        Ok(s) => format!("the program exited ({s})"),
                        Err(e) => format!("the program could not be waited for: {e}"),
                    });
                }
                line = lines.recv() => {
                    let Some(line) = line else {
                        // Its stdout ends when it exits: say how, when it does so at once.
                        break End::Exited(
                            match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                                Ok(Ok(s)) => format!("the program exited ({s})"),
                                _ => "the program closed its stdout".into(),
                            },
                        );
                    };
                    let message = match line {
                        Line::TooLong(len) => Err(Malformed::TooLong(len)),
                        Line::Bytes(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
                        Line::Bytes(bytes) => wire::parse(&bytes),
                    };
                    match message {
                        Err(why) => self.malformed(&why),
                        Ok(message) => {
                            if let Some(state) = self.handle(message, io, &emit_tx).await? {
                                connected = state == ConnectionState::Connected;
                                io.status.set(state);
                            }
                        }
                    }
                }
                answer = answer_rx.recv() => {
                    if let Some(answer) = answer {
                        self.write(&answer).await?;
                    }
                }
                out = io.outbound.recv(), if connected && self.pending.len() < SENDS_IN_FLIGHT => {
                    let Some(out) = out else { break End::Shutdown };
                    self.send(out).await?;
                }
                rooms = io.room_updates.changed() => {
                    self.rooms = rooms;
                    let names: Vec<&str> = self.rooms.iter().map(RoomId::as_str).collect();
                    self.write(&json!({"type": "rooms", "rooms": names})).await?;
                }
                _ = tick.tick() => self.expire(settings.send_timeout),
            }
        };
        drop(emit_tx);
        // What was handed to the emit task is stored or answered as not stored; its answers
        // still go to the program while it runs.
        let _ = tokio::time::timeout(Duration::from_secs(5), emit_task).await;
        while let Ok(answer) = answer_rx.try_recv() {
            let _ = self.write(&answer).await;
        }
        match end {
            End::Shutdown => {
                let _ = self.write(&json!({"type": "shutdown"})).await;
                Ok(())
            }
            End::Exited(why) => Err(ConnectorError::Disconnected(why)),
        }
    }

    /// Waits for `ready`: checks the version and that the program can carry what the account
    /// is configured to send it.
    async fn handshake(
        &mut self,
        settings: &Settings,
        lines: &mut mpsc::Receiver<Line>,
    ) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + settings.start_timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
                Err(_) => {
                    return Err(ConnectorError::Disconnected(format!(
                        "the program did not answer init with ready within {} s \
                         (start_timeout_secs)",
                        settings.start_timeout.as_secs()
                    )));
                }
                Ok(None) => {
                    return Err(ConnectorError::Disconnected(
                        "the program ended before it was ready".into(),
                    ));
                }
                Ok(Some(line)) => line,
            };
            let message = match line {
                Line::TooLong(len) => Err(Malformed::TooLong(len)),
                Line::Bytes(bytes) => wire::parse(&bytes),
            };
            match message {
                Ok(FromProgram::Ready {
                    protocol,
                    name,
                    capabilities,
                    ..
                }) => {
                    if protocol != wire::PROTOCOL {
                        return Err(ConnectorError::Fatal(format!(
                            "the program speaks protocol version {protocol}; this daemon speaks {}",
                            wire::PROTOCOL
                        )));
                    }
                    let offered = capability_names(&wire::declared_capabilities(&capabilities));
                    let missing: Vec<&str> = settings
                        .capability_names
                        .iter()
                        .map(String::as_str)
                        .filter(|c| !offered.contains(c))
                        .collect();
                    if !missing.is_empty() {
                        return Err(ConnectorError::Config(format!(
                            "capabilities: the program does not support {}",
                            missing.join(", ")
                        )));
                    }
                    info!(
                        account = %self.io_account,
                        program = name.as_deref().unwrap_or("?"),
                        "the program is ready"
                    );
                    return Ok(());
                }
                Ok(FromProgram::Log { level, message }) => {
                    log_line(&self.io_account, level, &message)
                }
                Ok(_) => self.malformed(&Malformed::Invalid("a message before ready".into())),
                Err(why) => self.malformed(&why),
            }
        }
    }

    /// Handles one message; a new connection state when it reports one.
    async fn handle(
        &mut self,
        message: FromProgram,
        io: &mut ConnectorIo,
        emit_tx: &mpsc::Sender<(Value, Event)>,
    ) -> Result<Option<ConnectionState>, ConnectorError> {
        match message {
            FromProgram::Ready { .. } => {
                self.malformed(&Malformed::Invalid("ready twice".into()));
            }
            FromProgram::Status { state } => {
                let state = match state.as_str() {
                    "connected" => ConnectionState::Connected,
                    "connecting" => ConnectionState::Connecting,
                    "disconnected" => ConnectionState::Disconnected,
                    _ => {
                        self.malformed(&Malformed::Invalid("an unknown status".into()));
                        return Ok(None);
                    }
                };
                return Ok(Some(state));
            }
            FromProgram::Emit { id, event } => match serde_json::from_value::<WireEvent>(event) {
                Ok(event) => {
                    if emit_tx.send((id, event.into_event())).await.is_err() {
                        return Err(ConnectorError::Fatal("the emit task ended".into()));
                    }
                }
                Err(e) => {
                    self.malformed(&Malformed::Invalid(format!(
                        "an event that does not parse ({:?} error)",
                        e.classify()
                    )));
                    let why = "the event does not parse";
                    self.write(&wire::emitted(&id, "invalid", Some(why)))
                        .await?;
                }
            },
            FromProgram::Sent {
                id,
                remote_id,
                error,
            } => {
                let Some(pending) = self.pending.remove(&id) else {
                    self.malformed(&Malformed::Invalid("an answer to no send".into()));
                    return Ok(None);
                };
                let what = pending.out.event.kind.name();
                let answer = match error {
                    Some(e) => Err(e.to_send_error(what)),
                    None => Ok(Receipt {
                        remote_id: remote_id.map(RemoteMessageId::new),
                    }),
                };
                pending.out.respond(answer);
            }
            FromProgram::StateGet { id, key } => {
                let answer = if key.len() > wire::MAX_STATE_KEY {
                    json!({"type": "state", "id": id, "error": "key too long"})
                } else {
                    match io.state.get_text(&key).await {
                        Ok(value) => json!({"type": "state", "id": id, "value": value}),
                        Err(_) => json!({"type": "state", "id": id, "error": "state unavailable"}),
                    }
                };
                self.write(&answer).await?;
            }
            FromProgram::StatePut { id, key, value } => {
                let answer = if key.len() > wire::MAX_STATE_KEY
                    || value.len() > wire::MAX_STATE_VALUE
                {
                    json!({"type": "state_saved", "id": id, "error": "key or value too long"})
                } else {
                    match io.state.put(&key, value.into_bytes()).await {
                        Ok(()) => json!({"type": "state_saved", "id": id}),
                        Err(_) => {
                            json!({"type": "state_saved", "id": id, "error": "state unavailable"})
                        }
                    }
                };
                self.write(&answer).await?;
            }
            FromProgram::Log { level, message } => log_line(&self.io_account, level, &message),
        }
        Ok(None)
    }

    /// Hands one send to the program, unless its room is not this account's.
    async fn send(&mut self, out: Outbound) -> Result<(), ConnectorError> {
        if !self.rooms.contains(&out.event.room) {
            out.respond(Err(SendError::RoomNotFound));
            return Ok(());
        }
        self.next_send += 1;
        let id = format!("d-{}", self.next_send);
        let line = wire::send(&id, out.origin.as_str(), &out.link, &out.event);
        self.pending.insert(
            id,
            Pending {
                out,
                since: Instant::now(),
            },
        );
        self.write(&line).await
    }

    /// Answers sends the program left unanswered past `send_timeout_secs`: `disconnected`.
    fn expire(&mut self, timeout: Duration) {
        let now = Instant::now();
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some(p) = self.pending.remove(&id) {
                warn!(account = %self.io_account, "a send had no answer within send_timeout_secs");
                p.out.respond(Err(SendError::Disconnected));
            }
        }
    }
}

fn log_line(account: &str, level: Option<String>, message: &str) {
    let text = &message[..message.floor_char_boundary(LOG_LINE)];
    match level.as_deref() {
        Some("error") => error!(account, program = %text, "program log"),
        Some("warn") => warn!(account, program = %text, "program log"),
        Some("debug") => debug!(account, program = %text, "program log"),
        _ => info!(account, program = %text, "program log"),
    }
}
