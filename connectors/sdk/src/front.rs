//! The HTTP front every listener of the daemon (and of a connector that listens itself, as the
//! message API) runs behind: bounded in time and in number before any handler sees a request.
//!
//! - a connection must send a request's headers within [`FrontLimits::header_timeout`] (also
//!   between requests on a kept-alive connection): a slow or idle client is cut off;
//! - at most [`FrontLimits::max_connections`] connections are served at once; beyond, new ones
//!   wait in the kernel's backlog;
//! - at most [`FrontLimits::max_requests`] requests are handled at once; beyond, `503` with
//!   `Retry-After: 1` at once, nothing queued;
//! - a request (its body read and its answer made, not a streamed answer's body) gets
//!   [`FrontLimits::request_timeout`]; past it, `503`.
//!
//! Handlers still bound their bodies themselves (a route's cap), and check credentials from the
//! headers before they read one. An answer given before the request's body was read to its end
//! (a 401 from the headers, a 413 from the declared length) says `Connection: close`: the
//! connection can't carry another request with that body still on it, and a client that pooled
//! it would send its next request into a closing socket.

use crate::ids::AccountId;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct FrontLimits {
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time to send the body and get the answer's head.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests handled at once.
    pub max_requests: usize,
}

impl Default for FrontLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_requests: 256,
        }
    }
}

/// `router` with the request bounds of `limits` (the concurrency cap and the request timeout).
/// Refusals are counted in `passerelle_drops_total` under `name` (the listener's config key or
/// account).
pub fn bounded(router: axum::Router, limits: FrontLimits, name: &AccountId) -> axum::Router {
    let permits = Arc::new(Semaphore::new(limits.max_requests.max(1)));
    let timeout = limits.request_timeout;
    let name = name.clone();
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: axum::middleware::Next| {
            let permits = permits.clone();
            let name = name.clone();
            async move {
                let (req, read) = watched(req);
                let mut response = 'answer: {
                    let Ok(_permit) = permits.try_acquire_owned() else {
                        crate::drops::inbound(&name, "http_busy");
                        break 'answer busy("too many requests at once; try again\n");
                    };
                    match tokio::time::timeout(timeout, next.run(req)).await {
                        Ok(response) => response,
                        Err(_) => {
                            crate::drops::inbound(&name, "http_request_timeout");
                            busy("the request took too long\n")
                        }
                    }
                };
                if !read.load(Ordering::Acquire)
                    && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                response
            }
        },
    ))
}

/// The request with its body watched: the flag is set once the body has been read to its end
/// (at once for a request without one).
fn watched(req: Request) -> (Request, Arc<AtomicBool>) {
    let read = Arc::new(AtomicBool::new(req.body().is_end_stream()));
    let flag = read.clone();
    let req = req.map(|inner| axum::body::Body::new(Watched { inner, read: flag }));
    (req, read)
}

struct Watched {
    inner: axum::body::Body,
    read: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn busy(text: &'static str) -> Response {
    (
        http::StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::RETRY_AFTER, "1")],
        text,
    )
        .into_response()
}

/// Serves `router` (wrapped by [`bounded`]) on `listener` until `stop` is cancelled; connections
/// then finish the request they are on (5 s at most).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: FrontLimits,
    name: &AccountId,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = bounded(router, limits, name);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            break;
        };
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, never spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone().into_service().map_request(
            |req: http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
        ));
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(router: axum::Router, limits: FrontLimits) -> (u16, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let name = AccountId::new("test");
        tokio::spawn(async move { serve(listener, router, limits, &name, stop2).await });
        (port, stop)
    }

    async fn answer(port: u16, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The head of the answer to `request`, sent on a connection kept open.
    async fn head(port: u16, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !out.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        String::from_utf8_lossy(&out).to_ascii_lowercase()
    }

    #[tokio::test]
    async fn an_answer_given_before_the_body_was_read_closes_the_connection() {
        let router = axum::Router::new()
            .route(
                "/refuse",
                axum::routing::post(|| async { http::StatusCode::UNAUTHORIZED }),
            )
            .route(
                "/read",
                axum::routing::post(|body: String| async move { body.len().to_string() }),
            );
        let (port, stop) = start(router, FrontLimits::default()).await;
        let refused = head(
            port,
            b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(refused.starts_with("http/1.1 401"), "{refused}");
        assert!(refused.contains("connection: close"), "{refused}");
        let read = head(
            port,
            b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(read.starts_with("http/1.1 200"), "{read}");
        assert!(!read.contains("connection: close"), "{read}");
        let bodiless = head(port, b"GET /refuse HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(bodiless.starts_with("http/1.1 405"), "{bodiless}");
        assert!(!bodiless.contains("connection: close"), "{bodiless}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let limits = FrontLimits {
            header_timeout: Duration::from_millis(300),
            ..FrontLimits::default()
        };
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (port, stop) = start(router, limits).await;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection stayed open");
        assert!(started.elapsed() < Duration::from_secs(3));
        // A whole request is answered.
        let ok = answer(
            port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        stop.cancel();
    }

    #[tokio::test]
    async fn requests_beyond_the_cap_are_answered_busy_at_once_and_slow_ones_time_out() {
        let limits = FrontLimits {
            max_requests: 2,
            request_timeout: Duration::from_millis(1500),
            ..FrontLimits::default()
        };
        let router = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/", axum::routing::get(|| async { "ok" }));
        let (port, stop) = start(router, limits).await;
        let slow = b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let first = tokio::spawn(answer(port, slow));
        let second = tokio::spawn(answer(port, slow));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let third = answer(
            port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(third.starts_with("HTTP/1.1 503"), "{third}");
        assert!(
            third.to_ascii_lowercase().contains("retry-after: 1"),
            "{third}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "queued instead of refused"
        );
        for slow in [first, second] {
            let got = slow.await.unwrap();
            assert!(got.starts_with("HTTP/1.1 503"), "{got}");
            assert!(got.contains("took too long"), "{got}");
        }
        let after = answer(
            port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(after.starts_with("HTTP/1.1 200"), "{after}");
        stop.cancel();
    }
}
