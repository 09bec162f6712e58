//! Faithful fakes of services that can't run here, written from their public documentation (the
//! wire facts are gathered in `PROTOCOL-NOTES.md`). Each serves on loopback, checks requests as the
//! service documents it, answers with its documented bodies and errors, and records what it
//! accepted so tests can assert exact outbound payloads.

pub mod meta;
pub mod signal;
pub mod telegram;

/// A listener on a free loopback port, and the port.
pub(crate) async fn listen() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

/// Serves `app` on `listener` in a task until `stop` is cancelled.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
}
