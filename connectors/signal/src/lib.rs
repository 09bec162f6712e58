//! # passerelle-signal
//!
//! The Signal connector (`kind = "signal"`). Signal has no official bot API; this connector speaks
//! to the open-source signal-cli running as a daemon with its JSON-RPC HTTP interface
//! (`signal-cli -a +NUMBER daemon --http=127.0.0.1:8080`), for an account registered or linked
//! with signal-cli beforehand. No reverse-engineered client runs inside passerelle.
//!
//! Rooms: a person (`+15551234567`, or their ACI UUID when their number is hidden) or a group
//! (`group:<group id>`, as `signal-cli listGroups` shows it). Both ways: text, replies (quotes),
//! reactions, remote deletes and edits of our own messages, attachments (sent as `data:` URIs;
//! offered to other networks through signed links, since they live in signal-cli's data dir).
//!
//! Inbound events come from `/api/v1/events`. Each event's id is kept in the store once its
//! events are stored, and a reconnect (of the stream, or of the whole daemon) asks for the events
//! after it (`Last-Event-ID`); signal-cli keeps its last 1,000. If signal-cli itself restarted it
//! sends all it kept, and the daemon drops the ones it already has by their ids.
//!
//! ## Layout
//! - [`config`]: the typed account table.
//! - [`rpc`]: the JSON-RPC client, its errors and the event-stream parser.
//! - [`inbound`]: envelopes to events.
//! - [`outbound`]: events to calls.

pub mod config;
pub mod inbound;
pub mod outbound;
pub mod rpc;
#[cfg(feature = "testing")]
/// A faithful fake of signal-cli's HTTP daemon for tests (feature `testing`).
pub mod testing;

use base64::Engine;
use futures::future::BoxFuture;
use passerelle_sdk::http::{HttpHandler, Request, Response};
use passerelle_sdk::signed_link::{self, SignedLinks};
use passerelle_sdk::{
    BuildContext, CancellationToken, Capabilities, ConfigIssue, ConnectionState, Connector,
    ConnectorError, ConnectorFactory, ConnectorIo, Emitter, Receipt, RoomId, SendError,
    StateHandle, StatusReporter,
};
use rpc::{Rpc, SseParser};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The state key of the last event handled.
const LAST_EVENT: &str = "last_event_id";

/// No byte (not even signal-cli's 15-second keep-alive) for this long: the stream is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// Builds Signal connectors.
pub struct SignalFactory;

impl ConnectorFactory for SignalFactory {
    fn kind(&self) -> &'static str {
        "signal"
    }

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        Ok(Box::new(SignalConnector {
            config: config::SignalConfig::parse(table)?,
            data_dir: ctx.data_dir.clone(),
        }))
    }
}

/// One Signal account.
pub struct SignalConnector {
    config: config::Settings,
    data_dir: std::path::PathBuf,
}

impl Connector for SignalConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            attachments: true,
            ..Capabilities::default()
        }
    }

    fn limits(&self) -> passerelle_sdk::Limits {
        passerelle_sdk::Limits {
            max_text_bytes: None,
            max_upload_bytes: Some(self.config.media.max_upload_bytes),
            ..Default::default()
        }
    }

    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        let r = room.as_str();
        if config::phone(r) || config::uuid(r) || config::group_of(r).is_some() {
            Ok(())
        } else {
            Err(
                "a Signal room is a number (+15551234567), an account UUID, or group:<group id>"
                    .into(),
            )
        }
    }

    fn room_kind(&self, room: &RoomId) -> passerelle_sdk::RoomKind {
        // A number or an account UUID is one contact's chat; only `group:` rooms are groups.
        if config::group_of(room.as_str()).is_some() {
            passerelle_sdk::RoomKind::Group
        } else {
            passerelle_sdk::RoomKind::Private
        }
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let cfg = self.config;
            let rpc =
                Arc::new(Rpc::new(&cfg.url, cfg.request_timeout).map_err(ConnectorError::Fatal)?);
            rpc.check()
                .await
                .map_err(|e| ConnectorError::Disconnected(e.to_string()))?;
            // Our own account id, so quotes of our messages are recognised whichever way they
            // name us.
            let self_uuid = match rpc
                .call("getUserStatus", json!({"recipient": [cfg.account]}))
                .await
            {
                Ok(v) => v
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|s| s.get("uuid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                Err(e) => {
                    tracing::warn!(account = %io.account, error = %e, "own account id unknown; quotes of our messages may not be recognised");
                    None
                }
            };
            let links = SignedLinks::for_account(
                cfg.media.public_url.as_deref(),
                io.account.as_str(),
                &self.data_dir,
            )?;
            io.http.serve(Arc::new(Files {
                links: links.clone(),
                rpc: rpc.clone(),
            }));
            let stop = io.shutdown.child_token();
            let stream = tokio::spawn(listen(Listener {
                rpc: rpc.clone(),
                account: cfg.account.clone(),
                self_uuid,
                rooms: io.rooms.clone(),
                links,
                max_bytes: cfg.media.max_upload_bytes,
                emitter: io.emitter.clone(),
                state: io.state.clone(),
                status: io.status.clone(),
                name: io.account.to_string(),
                stop: stop.clone(),
            }));
            let sender = outbound::Sender {
                rpc: &rpc,
                config: &cfg,
            };
            loop {
                let next = tokio::select! {
                    _ = io.shutdown.cancelled() => break,
                    next = io.outbound.recv() => next,
                };
                let Some(out) = next else { break };
                if !io.rooms.contains(&out.event.room) {
                    out.respond(Err(SendError::RoomNotFound));
                    continue;
                }
                let result = sender.send(&out.event).await.map(|id| Receipt {
                    remote_id: id.map(Into::into),
                });
                out.respond(result);
            }
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), stream).await;
            io.status.set(ConnectionState::Stopped);
            Ok(())
        })
    }
}

/// What the event-stream task needs.
struct Listener {
    rpc: Arc<Rpc>,
    account: String,
    self_uuid: Option<String>,
    rooms: Vec<RoomId>,
    links: Option<SignedLinks>,
    max_bytes: u64,
    emitter: Emitter,
    state: StateHandle,
    status: StatusReporter,
    name: String,
    stop: CancellationToken,
}

/// Follows the event stream until `stop`, reconnecting with backoff and `Last-Event-ID`.
async fn listen(l: Listener) {
    let mut last: Option<String> = match l.state.get(LAST_EVENT).await {
        Ok(Some(v)) => String::from_utf8(v).ok(),
        _ => None,
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let opened = tokio::select! {
            _ = l.stop.cancelled() => return,
            r = l.rpc.events(last.as_deref()) => r,
        };
        match opened {
            Ok(response) => {
                l.status.set(ConnectionState::Connected);
                backoff = Duration::from_millis(500);
                match follow(&l, response, &mut last).await {
                    Ok(()) => return,
                    Err(why) => {
                        tracing::warn!(account = %l.name, reason = %why, "Signal event stream lost; reconnecting");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(account = %l.name, error = %e, "cannot open the Signal event stream")
            }
        }
        l.status.set(ConnectionState::Connecting);
        tokio::select! {
            _ = l.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Reads one open stream. `Ok` when stopped, `Err` when the stream broke.
async fn follow(
    l: &Listener,
    mut response: reqwest::Response,
    last: &mut Option<String>,
) -> Result<(), String> {
    let mut parser = SseParser::default();
    let reader = inbound::Reader {
        account: &l.account,
        self_uuid: l.self_uuid.as_deref(),
        rooms: &l.rooms,
        links: l.links.as_ref(),
        max_bytes: l.max_bytes,
    };
    loop {
        let chunk = tokio::select! {
            _ = l.stop.cancelled() => return Ok(()),
            c = tokio::time::timeout(STREAM_SILENCE, response.chunk()) => c,
        };
        let bytes = match chunk {
            Err(_) => return Err("no keep-alive for 45 s".into()),
            Ok(Err(e)) => return Err(e.without_url().to_string()),
            Ok(Ok(None)) => return Err("signal-cli closed the stream".into()),
            Ok(Ok(Some(b))) => b,
        };
        for event in parser.feed(&bytes)? {
            if event.event.as_deref().unwrap_or("message") == "receive" {
                match serde_json::from_str::<Value>(&event.data) {
                    Ok(data) => {
                        let parsed = reader.read(&data);
                        if let Some(why) = parsed.skipped {
                            tracing::debug!(account = %l.name, item = why, "Signal envelope not bridged");
                        }
                        for e in parsed.events {
                            // Not stored: the stream is opened again after the last stored event.
                            l.emitter
                                .emit(e)
                                .await
                                .map_err(|e| format!("event not stored: {e}"))?;
                        }
                    }
                    Err(_) => {
                        tracing::warn!(account = %l.name, bytes = event.data.len(), "Signal event that is not JSON skipped");
                    }
                }
            }
            if let Some(id) = event.id {
                if let Err(e) = l.state.put(LAST_EVENT, id.clone()).await {
                    tracing::warn!(account = %l.name, error = %e, "stream position not saved; events may be asked for again (and dropped as duplicates)");
                }
                *last = Some(id);
            }
        }
    }
}

/// Serves the signed attachment links, fetching the file with `getAttachment`.
struct Files {
    links: Option<SignedLinks>,
    rpc: Arc<Rpc>,
}

impl HttpHandler for Files {
    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        signed_link::admit_media(head)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let rpc = self.rpc.clone();
        signed_link::serve(self.links.as_ref(), &request, move |id| async move {
            let data = rpc
                .call("getAttachment", json!({"id": id}))
                .await
                .map_err(|e| {
                    tracing::info!(error = %e, "attachment link: getAttachment failed");
                    (404, "attachment not available\n")
                })?;
            let bytes = data
                .get("data")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or((502, "attachment not understood\n"))?;
            // signal-cli hands attachments over JSON-RPC in base64: whole, never streamed.
            Ok(signed_link::File {
                len: Some(bytes.len() as u64),
                body: bytes.into(),
                mime: "application/octet-stream".to_owned(),
            })
        })
    }
}
