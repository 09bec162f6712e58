//! Endpoints a connector serves on the daemon's HTTP listener (webhooks, Matrix's Application
//! Service API). A running connector hands a handler to [`HttpMount::serve`]; the daemon passes it
//! every request under `/accounts/{account}/`, with that prefix removed from the path, and answers
//! `503` while the connector is not running. Request bodies are capped by the daemon.

use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::{Arc, RwLock};

/// A request as the daemon hands it over: the path is relative to `/accounts/{account}`.
pub type Request = http::Request<Bytes>;
/// A connector's answer.
pub type Response = http::Response<Bytes>;

/// Serves one connector's HTTP endpoints.
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: Request) -> BoxFuture<'static, Response>;
}

/// Where a connector mounts its handler. Cheap to clone; the daemon and the connector share it.
#[derive(Clone, Default)]
pub struct HttpMount {
    slot: Arc<RwLock<Option<Arc<dyn HttpHandler>>>>,
}

impl std::fmt::Debug for HttpMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpMount")
    }
}

impl HttpMount {
    /// An empty mount.
    pub fn new() -> Self {
        Self::default()
    }
    /// Serves `handler` from now on (replacing any earlier one).
    pub fn serve(&self, handler: Arc<dyn HttpHandler>) {
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some(handler);
        }
    }
    /// Stops serving (the daemon calls this when the connector's run ends).
    pub fn clear(&self) {
        if let Ok(mut slot) = self.slot.write() {
            *slot = None;
        }
    }
    /// The handler being served, if any.
    pub fn handler(&self) -> Option<Arc<dyn HttpHandler>> {
        self.slot.read().ok().and_then(|s| s.clone())
    }
}

/// A JSON answer with `status`.
pub fn json_response(status: u16, body: &serde_json::Value) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

/// A plain-text answer with `status`.
pub fn text_response(status: u16, text: &'static str) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}
