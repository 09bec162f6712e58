//! Hands an axum request to a connector's [`HttpMount`] (the harness's loopback server uses it;
//! the daemon has its own copy of these few lines, as the testkit is not one of its dependencies).

use axum::body::Body;
use axum::response::Response;
use passerelle_sdk::HttpMount;

/// Forwards `req` (body capped at `max_body` bytes) to the mounted handler; 503 when none. As the
/// daemon does for `account`: a leading `/accounts/{account}` is removed from the path, and
/// `/hooks/{account}` becomes `/hooks`; other paths pass as they are.
pub async fn forward(
    mount: &HttpMount,
    req: axum::extract::Request,
    max_body: usize,
    account: &str,
) -> Response {
    let Some(handler) = mount.handler() else {
        return status(503, "not running");
    };
    let (mut parts, body) = req.into_parts();
    let prefix = format!("/accounts/{account}");
    if parts.uri.path() == format!("/hooks/{account}") {
        let path = match parts.uri.query() {
            Some(q) => format!("/hooks?{q}"),
            None => "/hooks".to_owned(),
        };
        if let Ok(uri) = path.parse() {
            parts.uri = uri;
        }
    } else if let Some(rest) = parts.uri.path().strip_prefix(&prefix)
        && rest.starts_with('/')
    {
        let path = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        if let Ok(uri) = path.parse() {
            parts.uri = uri;
        }
    }
    // As the daemon: the head to `admit` first, the body read only if it is taken.
    let max_body = match handler.admit(&parts) {
        passerelle_sdk::Admission::Answer(answer) => return into_axum(answer),
        passerelle_sdk::Admission::Read { max_body: taken } => taken.min(max_body),
    };
    let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
        return status(413, "body too large");
    };
    let answer = handler
        .handle(http::Request::from_parts(parts, bytes))
        .await;
    into_axum(answer)
}

fn into_axum(answer: passerelle_sdk::http::Response) -> Response {
    let (parts, body) = answer.into_parts();
    let body = match body.into_full() {
        Ok(bytes) => Body::from(bytes),
        Err(stream) => Body::from_stream(stream.into_stream()),
    };
    Response::from_parts(parts, body)
}

fn status(code: u16, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}
