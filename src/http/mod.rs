//! The daemon's HTTP listeners.
//!
//! The admin listener (`http.listen`): `/healthz` (the process answers), `/readyz` (every enabled
//! account is connected, in cluster mode every account this instance owns; the body lists each
//! account's state, and in cluster mode which instance owns each), `/metrics` (Prometheus text
//! format), `/dead-letters` (the deliveries given up on: ids, destination and reason, as JSON),
//! `/status` (a page for people: accounts, links, queues, traffic; see [`crate::status`]) and
//! `POST /reload` (read the configuration file again). Unauthenticated: bind it to loopback or a
//! private network.
//!
//! The networks' callbacks: connectors that serve HTTP (Matrix's Application Service API, file
//! links) under `/accounts/{account}/…`, networks' webhooks (Meta, Telegram) at
//! `/hooks/{account}`, paste links at `/pastes/…`. On the public listener
//! (`http.public_listen`) when there is one, else on the admin listener.
//!
//! Every listener runs behind the SDK's `front` (header and request timeouts, connection and
//! request caps). A callback is shown to its connector's `admit` with its head only, which checks
//! the caller's credentials and names the largest body it takes; only then is the body read, up
//! to that and the route's cap. Answers may stream (files pass through as they come).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use passerelle_sdk::{AccountId, Admission, ConnectionState, HttpMount};
use std::sync::Arc;
use tokio::sync::watch;

/// Each running account's connection state, in start order (a reload adds and removes).
pub type AccountStates = Arc<std::sync::RwLock<Vec<(AccountId, watch::Receiver<ConnectionState>)>>>;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Each running account's connection state (a reload adds and removes accounts).
    pub accounts: AccountStates,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Each running account's connector endpoints, served under `/accounts/{account}/`.
    pub mounts: Arc<DashMap<AccountId, HttpMount>>,
    /// What `/status` shows.
    pub status: Arc<crate::status::Source>,
    /// Where `POST /reload` asks the daemon to re-read its configuration.
    pub reload: tokio::sync::mpsc::Sender<crate::daemon::ReloadRequest>,
    /// Paste links, served under `/pastes/`, when `[pastes]` is set.
    pub pastes: Option<Arc<crate::pastes::Pastes>>,
    /// The deliveries given up on, listed by `/dead-letters`.
    pub dead_letters: passerelle_sdk::DeadLetterLog,
    /// Cluster mode: who owns what, for `/readyz`.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Cluster mode: the accounts' relays, which take callbacks for any account here.
    pub relays: Option<Arc<crate::relay::Relays>>,
}

/// The largest request body a connector endpoint accepts (Matrix transactions can be large).
const MAX_CONNECTOR_BODY: usize = 16 * 1024 * 1024;

/// Every route on one listener (no `public_listen`).
pub fn router(state: AdminState) -> axum::Router {
    admin_routes().merge(callback_routes()).with_state(state)
}

/// The admin listener's routes when the callbacks have a listener of their own.
pub fn admin_router(state: AdminState) -> axum::Router {
    admin_routes().with_state(state)
}

/// The public listener's routes: the networks' callbacks and `/healthz`, nothing else.
pub fn public_router(state: AdminState) -> axum::Router {
    callback_routes()
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

fn admin_routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dead-letters", get(dead_letters))
        .route("/reload", axum::routing::post(reload))
        .route("/status", get(status))
}

/// `GET /status`: the page for people (see [`crate::status`]).
async fn status(State(state): State<AdminState>) -> axum::response::Response {
    let page = state.status.page().await.render();
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page,
    )
        .into_response()
}

/// `POST /reload`: the configuration file read again and put in force. 200 with what changed
/// (accounts started, restarted, stopped; keys that need a restart), 422 with every problem of
/// a configuration that was refused (the running one stays).
async fn reload(State(state): State<AdminState>) -> axum::response::Response {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let request = crate::daemon::ReloadRequest {
        answer: Some(answer),
    };
    if state.reload.send(request).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match answered.await {
        Ok(Ok(report)) => (StatusCode::OK, axum::Json(report)).into_response(),
        Ok(Err(issues)) => {
            let issues: Vec<serde_json::Value> = issues
                .iter()
                .map(|i| serde_json::json!({"path": i.path, "message": i.message}))
                .collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({ "refused": issues })),
            )
                .into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

fn callback_routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/accounts/{account}/{*rest}", any(connector))
        .route("/hooks/{account}", any(hook))
        .route("/pastes/{id}/{signature}", get(paste))
}

fn state_name(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Stopped => "stopped",
        _ => "unknown",
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let mut ready = true;
    let mut accounts = serde_json::Map::new();
    let states = state
        .accounts
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Cluster mode: ready when every account this instance owns is connected; the others run
    // elsewhere.
    let held = state.cluster.as_ref().map(|c| c.held());
    for (id, rx) in states.iter() {
        if held.as_ref().is_some_and(|h| !h.contains_key(id)) {
            accounts.insert(id.to_string(), serde_json::Value::from("elsewhere"));
            continue;
        }
        let s = *rx.borrow();
        ready &= s == ConnectionState::Connected;
        accounts.insert(id.to_string(), serde_json::Value::from(state_name(s)));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({ "ready": ready, "accounts": accounts });
    if let Some(cluster) = &state.cluster {
        // Who owns each account, as the database says (absent when it cannot be asked).
        let owners: serde_json::Map<String, serde_json::Value> = match cluster.owners().await {
            Ok(owners) => owners
                .into_iter()
                .map(|o| {
                    let owner = o.instance.filter(|_| o.expires_in_ms > 0);
                    (o.account.to_string(), serde_json::json!(owner))
                })
                .collect(),
            Err(_) => serde_json::Map::new(),
        };
        body["cluster"] = serde_json::json!({
            "instance": cluster.name(),
            "owners": owners,
        });
    }
    (code, axum::Json(body))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.prometheus.render(),
    )
}

/// Hands a request under `/accounts/{account}/` to that account's connector, with the prefix
/// removed from the path; 404 for an unknown account, 503 while its connector is not running.
async fn connector(
    State(state): State<AdminState>,
    axum::extract::Path((account, _rest)): axum::extract::Path<(String, String)>,
    req: axum::extract::Request,
) -> axum::response::Response {
    // The raw (still percent-encoded) remainder, so ids like `%23alias%3Aserver` survive.
    let tail = req
        .uri()
        .path()
        .strip_prefix("/accounts/")
        .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))
        .unwrap_or_else(|| "/".to_owned());
    forward(&state, &account, &tail, MAX_CONNECTOR_BODY, req).await
}

/// The largest body a webhook (`/hooks/{account}`) may carry; the connector's hook may accept
/// less (`passerelle_sdk::webhook`).
const MAX_HOOK_BODY: usize = 4 * 1024 * 1024;

/// A network's webhook call to `/hooks/{account}`: handed to the account's connector with the
/// path `/hooks`. The connector proves the sender itself before it reads the body.
async fn hook(
    State(state): State<AdminState>,
    axum::extract::Path(account): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> axum::response::Response {
    forward(&state, &account, "/hooks", MAX_HOOK_BODY, req).await
}

/// Hands `req` to `account`'s mounted handler with the path `tail` (and the original query):
/// first its head to the handler's `admit` (which may answer at once, unread), then its body, up
/// to the smaller of what `admit` takes and `max_body`.
async fn forward(
    state: &AdminState,
    account: &str,
    tail: &str,
    max_body: usize,
    req: axum::extract::Request,
) -> axum::response::Response {
    // The map's guard is let go at once: nothing is held while the request is served.
    let Some(handler) = state.mounts.get(account).map(|m| m.handler()) else {
        return (StatusCode::NOT_FOUND, "no such account\n").into_response();
    };
    let (mut parts, body) = req.into_parts();
    let path = match parts.uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_owned(),
    };
    match path.parse::<axum::http::Uri>() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad path\n").into_response(),
    }
    // Cluster mode: a call the account's relay takes is proved and kept here, wherever the
    // account runs.
    if let Some(relays) = &state.relays
        && let Some(relay) = relays.get(account).filter(|r| r.relays(&parts))
    {
        return relayed(relays, account, relay.as_ref(), parts, body, max_body).await;
    }
    let Some(handler) = handler else {
        return (StatusCode::SERVICE_UNAVAILABLE, "connector not running\n").into_response();
    };
    let max = match handler.admit(&parts) {
        Admission::Answer(answer) => return into_axum(answer),
        Admission::Read { max_body: taken } => taken.min(max_body),
    };
    let bytes = match read_body(&parts, body, max).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let answer = handler
        .handle(axum::http::Request::from_parts(parts, bytes))
        .await;
    into_axum(answer)
}

/// A request's body, up to `max` bytes (413 past it, unread when its declared length says so).
async fn read_body(
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
    max: usize,
) -> Result<axum::body::Bytes, axum::response::Response> {
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response());
    }
    axum::body::to_bytes(body, max)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response())
}

/// A call `relay` takes: its head admitted, its body read and proved, then kept for the
/// account's owner and answered (503 when it could not be kept: the network sends it again).
async fn relayed(
    relays: &crate::relay::Relays,
    account: &str,
    relay: &dyn passerelle_sdk::relay::Relay,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
    max_body: usize,
) -> axum::response::Response {
    use passerelle_sdk::relay::Relaying;
    let max = match relay.admit(&parts) {
        Admission::Answer(answer) => return into_axum(answer),
        Admission::Read { max_body: taken } => taken.min(max_body),
    };
    let bytes = match read_body(&parts, body, max).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let request = axum::http::Request::from_parts(parts, bytes);
    let answer = match relay.check(&request) {
        Relaying::Answer(answer) => return into_axum(answer),
        Relaying::Keep(answer) => answer,
    };
    let (parts, bytes) = request.into_parts();
    let id = AccountId::new(account);
    match relays.keep(&id, &parts, &bytes).await {
        Ok(true) => into_axum(answer),
        Ok(false) => {
            tracing::warn!(account = %id, waiting = crate::relay::MAX_WAITING, "cluster: a callback refused: too many wait for this account's owner");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many calls wait for this account; send it again later\n",
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(account = %id, error = %e, "cluster: a callback could not be kept; the network will send it again");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not stored, send it again\n",
            )
                .into_response()
        }
    }
}

/// A connector's answer as axum's: a whole body as it is, a stream passed on as it comes.
fn into_axum(answer: passerelle_sdk::http::Response) -> axum::response::Response {
    let (parts, body) = answer.into_parts();
    let body = match body.into_full() {
        Ok(bytes) => axum::body::Body::from(bytes),
        Err(stream) => axum::body::Body::from_stream(stream.into_stream()),
    };
    axum::response::Response::from_parts(parts, body)
}

/// A paste link: the whole text as plain text, never run or shown as a page by a browser.
async fn paste(
    State(state): State<AdminState>,
    axum::extract::Path((id, signature)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    let found = match &state.pastes {
        Some(pastes) if id.len() <= 64 && signature.len() <= 64 => {
            pastes.read(&id, &signature).await
        }
        _ => None,
    };
    let Some(text) = found else {
        return (
            StatusCode::NOT_FOUND,
            "no such paste (it may have expired)\n",
        )
            .into_response();
    };
    (
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("x-content-type-options", "nosniff"),
            ("content-security-policy", "sandbox"),
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
        ],
        text,
    )
        .into_response()
}

/// `/dead-letters`: the latest deliveries given up on, newest first, as JSON: ids, destination,
/// reason, tries and ages, never content.
async fn dead_letters(State(state): State<AdminState>) -> axum::response::Response {
    let now = passerelle_sdk::Timestamp::now().0;
    let list: Vec<serde_json::Value> = state
        .dead_letters
        .recent()
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "event": d.key.to_string(),
                "account": d.account.as_str(),
                "room": d.room.as_str(),
                "reason": d.reason,
                "attempts": d.attempts,
                "queued_secs_ago": now.saturating_sub(d.queued_at.0) / 1000,
                "given_up_secs_ago": now.saturating_sub(d.dead_at.0) / 1000,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "dead_letters": list })).into_response()
}
