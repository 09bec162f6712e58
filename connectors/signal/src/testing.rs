//! A fake of signal-cli's HTTP daemon (`signal-cli -a ACCOUNT daemon --http`), written from its
//! man page `signal-cli-jsonrpc(5)` and its HTTP handler (see this crate's `PROTOCOL.md`):
//!
//! - `POST /api/v1/rpc`: JSON-RPC 2.0, one request or a batch, `Content-Type: application/json`
//!   (else 415); `send`, `sendReaction`, `remoteDelete`, `getAttachment` and `getUserStatus`, with
//!   the result shapes signal-cli writes (`{"timestamp","results":[{"recipientAddress","type"}]}`,
//!   `{"data": base64}`); JSON-RPC errors with signal-cli's codes (-1 user error, -32601 unknown
//!   method, -32603 internal error).
//! - `GET /api/v1/events`: server-sent events `id:<start>-<seq>`, `event:receive`, `data:` the
//!   received envelope `{"envelope":…, "account":…}`; a `:` keep-alive every 15 s; the last 1,000
//!   events kept, and a client that reconnects with `Last-Event-ID` first gets the ones after it
//!   (all of them when the id is unknown, e.g. from before a restart).
//! - `GET /api/v1/check`: 200.
//!
//! People are simulated with [`FakeSignalCli::receive`] and the envelope helpers. Every call is
//! recorded with its parameters; files sent as `data:` URIs are decoded and kept.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many events signal-cli keeps for clients that reconnect.
pub const KEPT_EVENTS: usize = 1000;

/// A call made to the daemon.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method.
    pub method: String,
    /// Its parameters.
    pub params: Value,
}

/// A file sent as a `data:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentFile {
    /// The MIME type.
    pub mime: String,
    /// The `filename=` part.
    pub name: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    prefix: String,
    seq: u64,
    kept: VecDeque<(u64, String)>,
    clients: Vec<(mpsc::UnboundedSender<String>, CancellationToken)>,
    users: HashMap<String, String>,
    groups: HashMap<String, Vec<String>>,
    calls: Vec<Call>,
    files: Vec<SentFile>,
    attachments: HashMap<String, Vec<u8>>,
    next_ts: u64,
    fail: VecDeque<Value>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    account: String,
    account_uuid: String,
    stop: CancellationToken,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    match inner.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rpc_error(code: i64, message: &str, data: Value) -> Value {
    json!({"code": code, "message": message, "data": data})
}

impl Shared {
    fn timestamp(&self) -> u64 {
        let mut inner = lock(&self.inner);
        inner.next_ts = inner.next_ts.max(now_ms()) + 1;
        inner.next_ts
    }

    fn handle(&self, request: &Value) -> Value {
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let answer = |r: Result<Value, Value>| match r {
            Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
            Err(error) => json!({"jsonrpc": "2.0", "error": error, "id": id}),
        };
        let Some(method) = request.get("method").and_then(Value::as_str) else {
            return answer(Err(rpc_error(
                -32600,
                "method field must be set",
                Value::Null,
            )));
        };
        let params = request.get("params").cloned().unwrap_or(json!({}));
        {
            let mut inner = lock(&self.inner);
            inner.calls.push(Call {
                method: method.to_owned(),
                params: params.clone(),
            });
            if let Some(e) = inner.fail.pop_front() {
                return answer(Err(e));
            }
        }
        answer(match method {
            "send" => self.send(&params),
            "sendReaction" | "remoteDelete" => self
                .deliver(&params)
                .map(|(ts, results)| json!({"timestamp": ts, "results": results})),
            "getAttachment" => {
                let id = params.get("id").and_then(Value::as_str).unwrap_or("");
                match lock(&self.inner).attachments.get(id) {
                    Some(b) => {
                        Ok(json!({"data": base64::engine::general_purpose::STANDARD.encode(b)}))
                    }
                    None => Err(rpc_error(
                        -32603,
                        &format!("An error occurred reading attachment: {id}"),
                        Value::Null,
                    )),
                }
            }
            "getUserStatus" => {
                let inner = lock(&self.inner);
                let list: Vec<Value> = recipients(&params)
                    .into_iter()
                    .map(|r| {
                        let uuid = if r == self.account {
                            Some(self.account_uuid.clone())
                        } else {
                            inner.users.get(&r).cloned()
                        };
                        json!({"recipient": r, "number": r, "uuid": uuid, "isRegistered": uuid.is_some()})
                    })
                    .collect();
                Ok(Value::Array(list))
            }
            _ => Err(rpc_error(-32601, "Method not implemented", Value::Null)),
        })
    }

    /// The recipients a call addresses, checked: (timestamp, per-recipient results).
    fn deliver(&self, params: &Value) -> Result<(u64, Vec<Value>), Value> {
        let ts = self.timestamp();
        let inner = lock(&self.inner);
        let mut results = Vec::new();
        if let Some(group) = params.get("groupId").and_then(Value::as_str) {
            let Some(members) = inner.groups.get(group) else {
                return Err(rpc_error(-1, "Invalid group id", Value::Null));
            };
            for m in members.iter().filter(|m| **m != self.account) {
                results.push(
                    json!({"recipientAddress": {"uuid": inner.users.get(m), "number": m},
                    "groupId": group, "type": "SUCCESS"}),
                );
            }
            return Ok((ts, results));
        }
        let list = recipients(params);
        if list.is_empty() {
            return Err(rpc_error(-1, "No recipients given", Value::Null));
        }
        let mut failed = false;
        for r in list {
            match inner.users.get(&r) {
                Some(uuid) => results.push(
                    json!({"recipientAddress": {"uuid": uuid, "number": r}, "type": "SUCCESS"}),
                ),
                None => {
                    failed = true;
                    results.push(json!({"recipientAddress": {"uuid": null, "number": r}, "type": "UNREGISTERED_FAILURE"}));
                }
            }
        }
        if failed && !results.iter().any(|r| r["type"] == "SUCCESS") {
            return Err(rpc_error(
                -1,
                "Failed to send message",
                json!({"response": {"timestamp": ts, "results": results}}),
            ));
        }
        Ok((ts, results))
    }

    fn send(&self, params: &Value) -> Result<Value, Value> {
        let mut files = Vec::new();
        let list = match params.get("attachments").or(params.get("attachment")) {
            Some(Value::Array(a)) => a.clone(),
            Some(v @ Value::String(_)) => vec![v.clone()],
            _ => Vec::new(),
        };
        for a in list {
            let uri = a.as_str().unwrap_or("");
            match parse_data_uri(uri) {
                Some(f) => files.push(f),
                None => {
                    return Err(rpc_error(
                        -1,
                        "Failed to add attachment: file not found",
                        Value::Null,
                    ));
                }
            }
        }
        let message = params.get("message").and_then(Value::as_str).unwrap_or("");
        if message.is_empty() && files.is_empty() {
            return Err(rpc_error(-1, "No message given", Value::Null));
        }
        let (ts, results) = self.deliver(params)?;
        lock(&self.inner).files.extend(files);
        Ok(json!({"timestamp": ts, "results": results}))
    }

    fn push_event(&self, data: String) {
        let mut inner = lock(&self.inner);
        inner.seq += 1;
        let seq = inner.seq;
        inner.kept.push_back((seq, data.clone()));
        while inner.kept.len() > KEPT_EVENTS {
            inner.kept.pop_front();
        }
        let frame = format!("id:{}-{seq}\nevent:receive\ndata:{data}\n\n", inner.prefix);
        inner.clients.retain(|(c, _)| c.send(frame.clone()).is_ok());
    }
}

fn recipients(params: &Value) -> Vec<String> {
    match params.get("recipient").or(params.get("recipients")) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Reads `data:<MIME>[;filename=<NAME>];base64,<DATA>`.
fn parse_data_uri(uri: &str) -> Option<SentFile> {
    let rest = uri.strip_prefix("data:")?;
    let (head, b64) = rest.split_once(',')?;
    let mut parts = head.split(';');
    let mime = parts.next()?.to_owned();
    let mut name = None;
    let mut base64 = false;
    for p in parts {
        if let Some(n) = p.strip_prefix("filename=") {
            name = Some(n.to_owned());
        } else if p == "base64" {
            base64 = true;
        }
    }
    if !base64 {
        return None;
    }
    let data = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(SentFile { mime, name, data })
}

async fn rpc(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let e = json!({"jsonrpc": "2.0", "error": rpc_error(-32700, "Parse error", Value::Null), "id": null});
        return axum::Json(e).into_response();
    };
    let answer = match &request {
        Value::Array(batch) => Value::Array(batch.iter().map(|r| s.handle(r)).collect()),
        single => s.handle(single),
    };
    axum::Json(answer).into_response()
}

async fn events(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let closed = s.stop.child_token();
    {
        let mut inner = lock(&s.inner);
        if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            let after = last
                .strip_prefix(&format!("{}-", inner.prefix))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            for (seq, data) in inner.kept.iter().filter(|(seq, _)| *seq > after) {
                let _ = tx.send(format!(
                    "id:{}-{seq}\nevent:receive\ndata:{data}\n\n",
                    inner.prefix
                ));
            }
        }
        inner.clients.push((tx.clone(), closed.clone()));
    }
    let until = closed.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = until.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            }
            if tx.send(":\n".into()).is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold((rx, closed), |(mut rx, closed)| async move {
        let frame = tokio::select! {
            _ = closed.cancelled() => return None,
            f = rx.recv() => f?,
        };
        Some((Ok::<_, std::io::Error>(frame), (rx, closed)))
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// The fake daemon, serving on `127.0.0.1:port` until dropped.
pub struct FakeSignalCli {
    /// Its port.
    pub port: u16,
    shared: Shared,
}

impl Drop for FakeSignalCli {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl FakeSignalCli {
    /// Starts a daemon for `account` (a number), whose account id is `account_uuid`.
    pub async fn start(account: &str, account_uuid: &str) -> Self {
        let (listener, port) = passerelle_testkit::loopback::listen().await;
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                prefix: now_ms().to_string(),
                ..Inner::default()
            })),
            account: account.to_owned(),
            account_uuid: account_uuid.to_owned(),
            stop: CancellationToken::new(),
        };
        let app = axum::Router::new()
            .route("/api/v1/rpc", axum::routing::post(rpc))
            .route("/api/v1/events", axum::routing::get(events))
            .route(
                "/api/v1/check",
                axum::routing::get(|| async { StatusCode::OK }),
            )
            .with_state(shared.clone());
        passerelle_testkit::loopback::serve(listener, app, shared.stop.clone());
        Self { port, shared }
    }

    /// The `url` a connector is configured with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A registered Signal user.
    pub fn add_user(&self, number: &str, uuid: &str) {
        lock(&self.shared.inner)
            .users
            .insert(number.to_owned(), uuid.to_owned());
    }

    /// A group the account is in, with `members` (numbers).
    pub fn add_group(&self, id: &str, members: &[&str]) {
        lock(&self.shared.inner).groups.insert(
            id.to_owned(),
            members.iter().map(|m| (*m).to_owned()).collect(),
        );
    }

    /// A received attachment, as signal-cli keeps it in its data dir.
    pub fn add_attachment(&self, id: &str, data: &[u8]) {
        lock(&self.shared.inner)
            .attachments
            .insert(id.to_owned(), data.to_vec());
    }

    /// signal-cli receives `envelope` (its `source…` fields filled from `from`, a registered
    /// user's number, and `timestamp` when missing); the envelope's timestamp.
    pub fn receive(&self, from: &str, mut envelope: Value) -> u64 {
        let ts = match envelope.get("timestamp").and_then(Value::as_u64) {
            Some(ts) => ts,
            None => self.shared.timestamp(),
        };
        let uuid = lock(&self.shared.inner).users.get(from).cloned();
        let base = json!({"source": from, "sourceNumber": from, "sourceUuid": uuid,
            "sourceName": format!("Person {}", &from[from.len().saturating_sub(4)..]),
            "sourceDevice": 1, "timestamp": ts, "serverReceivedTimestamp": ts + 5,
            "serverDeliveredTimestamp": ts + 9});
        if let (Some(e), Some(b)) = (envelope.as_object_mut(), base.as_object()) {
            for (k, v) in b {
                e.entry(k.clone()).or_insert(v.clone());
            }
        }
        let data = json!({"envelope": envelope, "account": self.shared.account});
        self.shared.push_event(data.to_string());
        ts
    }

    /// `from` sends `text` directly to the account; the message's timestamp.
    pub fn text_from(&self, from: &str, text: &str) -> u64 {
        let ts = self.shared.timestamp();
        self.receive(
            from,
            json!({"timestamp": ts, "dataMessage": {"timestamp": ts, "message": text, "expiresInSeconds": 0, "viewOnce": false}}),
        )
    }

    /// `from` sends `text` in `group`.
    pub fn group_text(&self, from: &str, group: &str, text: &str) -> u64 {
        let ts = self.shared.timestamp();
        self.receive(
            from,
            json!({"timestamp": ts, "dataMessage": {"timestamp": ts, "message": text, "expiresInSeconds": 0,
                "viewOnce": false, "groupInfo": {"groupId": group, "groupName": "Group", "revision": 2, "type": "DELIVER"}}}),
        )
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.inner).calls.clone()
    }

    /// Files sent so far.
    pub fn files(&self) -> Vec<SentFile> {
        lock(&self.shared.inner).files.clone()
    }

    /// Makes the next call fail with `code`, `message` and `data`.
    pub fn fail_next(&self, code: i64, message: &str, data: Value) {
        lock(&self.shared.inner)
            .fail
            .push_back(rpc_error(code, message, data));
    }

    /// Closes every open event stream (a network blip): clients must reconnect.
    pub fn drop_streams(&self) {
        for (_, closed) in lock(&self.shared.inner).clients.drain(..) {
            closed.cancel();
        }
    }

    /// How many event streams are open.
    pub fn streams(&self) -> usize {
        let mut inner = lock(&self.shared.inner);
        inner
            .clients
            .retain(|(c, closed)| !c.is_closed() && !closed.is_cancelled());
        inner.clients.len()
    }
}
