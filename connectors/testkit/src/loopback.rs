//! Serving HTTP on loopback for tests: what each connector's fake (its crate's `testing` feature)
//! and [`crate::file_server`] stand on.

/// A listener on a free loopback port, and the port.
pub async fn listen() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

/// Serves `app` on `listener` in a task until `stop` is cancelled.
pub fn serve(
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
