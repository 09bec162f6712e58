//! The admin HTTP listener: `/healthz` (the process answers), `/readyz` (every enabled account is
//! connected; the body lists each account's state) and `/metrics` (Prometheus text format).
//! Unauthenticated: bind it to loopback or put it behind a proxy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use passerelle_sdk::{AccountId, ConnectionState};
use std::sync::Arc;
use tokio::sync::watch;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Each enabled account's connection state.
    pub accounts: Arc<Vec<(AccountId, watch::Receiver<ConnectionState>)>>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
}

/// The admin routes.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
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
    for (id, rx) in state.accounts.iter() {
        let s = *rx.borrow();
        ready &= s == ConnectionState::Connected;
        accounts.insert(id.to_string(), serde_json::Value::from(state_name(s)));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(serde_json::json!({ "ready": ready, "accounts": accounts })),
    )
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
