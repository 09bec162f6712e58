//! The API's HTTP endpoints.

use crate::message::ApiMessage;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use passerelle_sdk::{Disposition, EmitError, Emitter, RoomId, Secret};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Where outbound messages go: live streams and the buffer `GET /api/messages` drains.
pub struct Hub {
    live: broadcast::Sender<Arc<str>>,
    buffer: Mutex<VecDeque<Arc<str>>>,
    capacity: usize,
    closed: CancellationToken,
}

impl Hub {
    /// A hub keeping at most `capacity` unread messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            live: broadcast::channel(1024).0,
            buffer: Mutex::new(VecDeque::new()),
            capacity,
            closed: CancellationToken::new(),
        }
    }

    /// Hands a message to every stream and the buffer.
    pub fn publish(&self, msg: ApiMessage) {
        let Ok(json) = serde_json::to_string(&msg) else {
            return;
        };
        let json: Arc<str> = Arc::from(json);
        if let Ok(mut buffer) = self.buffer.lock() {
            if buffer.len() >= self.capacity {
                buffer.pop_front();
                tracing::warn!("API buffer full: the oldest unread message was forgotten");
            }
            buffer.push_back(json.clone());
        }
        let _ = self.live.send(json);
    }

    /// Ends every stream.
    pub fn close(&self) {
        self.closed.cancel();
    }

    fn drain(&self) -> Vec<Arc<str>> {
        self.buffer
            .lock()
            .map(|mut b| b.drain(..).collect())
            .unwrap_or_default()
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The bearer token.
    pub token: Arc<Secret>,
    /// Hands posts to the daemon.
    pub emitter: Emitter,
    /// The gateways (rooms) this account serves.
    pub rooms: Arc<std::sync::RwLock<Vec<RoomId>>>,
    /// Outbound messages.
    pub hub: Arc<Hub>,
    /// Largest accepted body.
    pub max_body: usize,
}

/// The API routes.
pub fn router(state: AppState) -> axum::Router {
    let limit = state.max_body;
    axum::Router::new()
        .route("/api/health", get(|| async { "OK" }))
        .route("/api/message", post(post_message))
        .route("/api/messages", get(messages))
        .route("/api/stream", get(stream))
        .route("/api/websocket", get(websocket))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Checks the bearer token; the error is the 401 answer.
fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !given.is_empty() && state.token.matches(given) {
        Ok(())
    } else {
        tracing::warn!("API request with a missing or wrong token refused");
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )))
    }
}

/// Parses and emits one posted message; the answer is the message with its id, or an error.
async fn post_json(state: &AppState, body: &[u8]) -> Response {
    let msg: ApiMessage = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(
                line = e.line(),
                column = e.column(),
                "API post with malformed JSON refused"
            );
            let what = format!("malformed JSON at line {} column {}", e.line(), e.column());
            return error(StatusCode::BAD_REQUEST, &what);
        }
    };
    let rooms = state
        .rooms
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (event, mut answer) = match msg.into_event(&rooms) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(status = e.status, problem = %e.message, "API post refused");
            return error(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                &e.message,
            );
        }
    };
    // As matterbridge answers a post: its channel and protocol are "api", its account this one.
    answer.channel = "api".into();
    answer.account = state.emitter.account().to_string();
    match state.emitter.emit(event).await {
        Ok(Disposition::Refused { reason }) => {
            error(StatusCode::FORBIDDEN, &format!("refused: {reason}"))
        }
        Ok(_) => axum::Json(answer).into_response(),
        Err(EmitError::ShuttingDown) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; try again later",
        ),
        Err(e) => {
            tracing::error!(error = %e, "API post not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not stored; try again later",
            )
        }
    }
}

/// The token is checked from the headers before a byte of the body is read; a body larger than
/// `max_body_bytes` (declared or sent) is 413.
async fn post_message(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(r) = authorized(&state, &parts.headers) {
        return *r;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let Ok(body) = axum::body::to_bytes(body, state.max_body).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    };
    post_json(&state, &body).await
}

async fn messages(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    let items = state.hub.drain();
    let mut body = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push(']');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    let rx = state.hub.live.subscribe();
    let closed = state.hub.closed.clone();
    let hello: Arc<str> = Arc::from(r#"{"event":"api_connected"}"#);
    let lines = futures::stream::unfold(
        (rx, closed, Some(hello)),
        |(mut rx, closed, first)| async move {
            if let Some(line) = first {
                return Some((
                    Ok::<_, std::io::Error>(Bytes::from(format!("{line}\n"))),
                    (rx, closed, None),
                ));
            }
            loop {
                tokio::select! {
                    _ = closed.cancelled() => return None,
                    next = rx.recv() => match next {
                        Ok(line) => return Some((Ok(Bytes::from(format!("{line}\n"))), (rx, closed, None))),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "API stream client too slow; messages skipped");
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    upgrade.on_upgrade(move |socket| serve_socket(state, socket))
}

async fn serve_socket(state: AppState, mut socket: WebSocket) {
    let mut rx = state.hub.live.subscribe();
    let closed = state.hub.closed.clone();
    loop {
        tokio::select! {
            _ = closed.cancelled() => break,
            next = rx.recv() => match next {
                Ok(line) => {
                    if socket.send(WsMessage::Text(line.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "API websocket client too slow; messages skipped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    let answer = post_json(&state, text.as_bytes()).await;
                    if !answer.status().is_success() {
                        let body = axum::body::to_bytes(answer.into_body(), 4096).await.unwrap_or_default();
                        let reply = String::from_utf8_lossy(&body).into_owned();
                        if socket.send(WsMessage::Text(reply.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
