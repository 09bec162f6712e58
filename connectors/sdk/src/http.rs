//! Endpoints a connector serves on the daemon's HTTP listener (webhooks, Matrix's Application
//! Service API). A running connector hands a handler to [`HttpMount::serve`]; the daemon passes it
//! every request under `/accounts/{account}/`, with that prefix removed from the path, and answers
//! `503` while the connector is not running.
//!
//! Each request is first shown to the handler's [`HttpHandler::admit`] with its head only (method,
//! path, headers): the handler checks the caller's credentials there and says how large a body
//! it takes. Only then does the daemon read the body, up to that size (and its route's cap), and
//! hand the whole request to [`HttpHandler::handle`]. An answer's body may be a stream (a file
//! passed through), which the daemon sends as it comes.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use std::sync::{Arc, RwLock};

/// A request as the daemon hands it over: the path is relative to `/accounts/{account}`.
pub type Request = http::Request<Bytes>;
/// A connector's answer.
pub type Response = http::Response<Body>;

/// The body of an answer: whole, or a stream of chunks.
pub struct Body(Inner);

enum Inner {
    Full(Bytes),
    Stream(BoxStream<'static, Result<Bytes, std::io::Error>>),
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Self(Inner::Full(Bytes::new()))
    }
    /// A body sent as `chunks` come (a file passed through without holding it whole).
    pub fn stream(
        chunks: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Self {
        Self(Inner::Stream(chunks.boxed()))
    }
    /// A body sent as `chunks` come that ends in an error (cutting the answer short) once more
    /// than `max` bytes came: a file larger than allowed is never passed on whole.
    pub fn capped(
        chunks: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
        max: u64,
    ) -> Self {
        let mut seen: u64 = 0;
        Self::stream(chunks.map(move |chunk| {
            let chunk = chunk?;
            seen = seen.saturating_add(chunk.len() as u64);
            if seen > max {
                Err(std::io::Error::other("file larger than allowed"))
            } else {
                Ok(chunk)
            }
        }))
    }
    /// The whole body, when it is not a stream.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.0 {
            Inner::Full(b) => Some(b),
            Inner::Stream(_) => None,
        }
    }
    /// The whole body, or the stream back when it is one.
    pub fn into_full(self) -> Result<Bytes, Self> {
        match self.0 {
            Inner::Full(b) => Ok(b),
            other => Err(Self(other)),
        }
    }
    /// The body as a stream of chunks (one chunk when it is whole).
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
        match self.0 {
            Inner::Full(b) => futures::stream::once(async move { Ok(b) }).boxed(),
            Inner::Stream(s) => s,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Full(b) => write!(f, "Body({} bytes)", b.len()),
            Inner::Stream(_) => f.write_str("Body(stream)"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self(Inner::Full(b))
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Self(Inner::Full(Bytes::from(b)))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self(Inner::Full(Bytes::from(s)))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self(Inner::Full(Bytes::from_static(s.as_bytes())))
    }
}

/// What a handler makes of a request from its head alone.
#[derive(Debug)]
pub enum Admission {
    /// Read its body, up to this many bytes (a larger body is answered 413 unread), and hand it
    /// to [`HttpHandler::handle`].
    Read {
        /// The largest body taken.
        max_body: usize,
    },
    /// Answer this at once (401, 403, 404…); the body is never read.
    Answer(Response),
}

impl Admission {
    /// Read a body of up to `max_body` bytes.
    pub fn read(max_body: usize) -> Self {
        Self::Read { max_body }
    }
}

/// Serves one connector's HTTP endpoints.
pub trait HttpHandler: Send + Sync + 'static {
    /// Looks at a request before its body is read: checks the caller's credentials from the
    /// headers (in constant time) and says how large a body this endpoint takes. Cheap and
    /// synchronous: no I/O here.
    fn admit(&self, head: &http::request::Parts) -> Admission;
    /// Answers one admitted request.
    fn handle(&self, request: Request) -> BoxFuture<'static, Response>;
    /// Answers a call another instance of the cluster took, proved with the account's
    /// [`crate::relay::Relay`] and kept (see [`crate::relay`]). The default checks it again as
    /// [`HttpHandler::handle`] does; a handler whose proof ages (a signed timestamp) skips the
    /// proof here, since the call may have waited longer than the proof's window.
    fn handle_relayed(&self, request: Request) -> BoxFuture<'static, Response> {
        self.handle(request)
    }
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
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(Body::empty()))
}

/// A plain-text answer with `status`.
pub fn text_response(status: u16, text: &'static str) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .unwrap_or_else(|_| http::Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_capped_body_is_cut_short_past_its_cap_and_passes_whole_below_it() {
        let chunks = || {
            futures::stream::iter(
                (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[7u8; 1000]))),
            )
        };
        let mut under = Body::capped(chunks(), 4000).into_stream();
        let mut n = 0;
        while let Some(chunk) = under.next().await {
            n += chunk.expect("within the cap").len();
        }
        assert_eq!(n, 4000);
        let mut over = Body::capped(chunks(), 2500).into_stream();
        let mut passed = 0;
        let mut failed = false;
        while let Some(chunk) = over.next().await {
            match chunk {
                Ok(c) => passed += c.len(),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a file past its cap went through whole");
        assert_eq!(passed, 2000, "nothing past the cap is passed on");
        assert!(Body::from("x").into_full().is_ok());
        assert!(Body::capped(chunks(), 1).into_full().is_err());
    }
}
