//! The inbound webhook front shared by every connector a network calls over HTTP (Meta's
//! WhatsApp, Messenger and Instagram, Telegram in webhook mode).
//!
//! The daemon serves each account's hook at `/hooks/{account}` on its HTTP listener and hands the
//! request to the account's mounted handler with the path `/hooks`. A connector mounts a
//! [`WebhookEndpoint`], which does everything that must be the same for every network before the
//! connector's own code sees a byte of the body:
//! - the body size is checked (413 above [`HookSettings::max_body`]);
//! - the sender is proved over the **raw** body, in constant time ([`Proof`]); 401 when the proof
//!   is missing or wrong, and the body is never parsed;
//! - Meta's subscription handshake (`GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`)
//!   is answered with the challenge when the verify token matches, 403 otherwise;
//! - only then is the body handed to the connector's [`HookSink`], which parses it and emits its
//!   events with [`crate::Emitter::emit`]; the answer is 200 only once every event is durably
//!   queued (or known to be a duplicate), 400 for a malformed body (nothing is emitted), and 503
//!   when the daemon could not store an event, so the network delivers it again.
//!
//! Redelivered events are deduplicated by the daemon on their remote message id (see
//! [`crate::Disposition::Duplicate`]); a sink gives every event it emits the network's id.
//! No answer ever echoes the body, and nothing here logs it.

use crate::http::{Admission, HttpHandler, Request, Response};
use crate::relay::{Relay, Relaying};
use crate::secret::Secret;
use bytes::Bytes;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The largest hook body accepted by default: Meta batches stay far below it.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// How a network proves that a hook call comes from it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Proof {
    /// Meta: `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256(app secret, raw body)>`.
    HubSignature256 {
        /// The app secret the signature is keyed with.
        app_secret: Secret,
    },
    /// Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:" + timestamp + ":" +
    /// raw body)>`, with `X-Slack-Request-Timestamp` no further than `window_secs` from now, so
    /// a recorded call can't be replayed later.
    SlackSignature {
        /// The app's signing secret.
        signing_secret: Secret,
        /// How far the timestamp may be from now, in seconds (Slack advises 300).
        window_secs: u64,
    },
    /// A shared secret sent as a header, as Telegram's `X-Telegram-Bot-Api-Secret-Token`.
    SecretHeader {
        /// The header's name.
        header: &'static str,
        /// The secret it must carry.
        token: Secret,
    },
}

impl Proof {
    /// Whether `headers` prove `body`, compared in constant time.
    pub fn verify(&self, headers: &http::HeaderMap, body: &[u8]) -> bool {
        match self {
            Self::HubSignature256 { app_secret } => {
                let Some(given) = headers
                    .get("x-hub-signature-256")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("sha256="))
                    .and_then(decode_hex)
                else {
                    return false;
                };
                let expected = hub_signature(app_secret.expose().as_bytes(), body);
                given.len() == expected.len() && bool::from(given.ct_eq(&expected))
            }
            Self::SlackSignature {
                signing_secret,
                window_secs,
            } => {
                let Some((timestamp, given)) = slack_headers(headers, *window_secs) else {
                    return false;
                };
                let expected = slack_signature(signing_secret.expose().as_bytes(), timestamp, body);
                given.len() == expected.len() && bool::from(given.ct_eq(&expected))
            }
            Self::SecretHeader { header, token } => headers
                .get(*header)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| token.matches(v)),
        }
    }
}

/// Slack's timestamp (checked against the window) and decoded signature, when both are there.
fn slack_headers(headers: &http::HeaderMap, window_secs: u64) -> Option<(u64, Vec<u8>)> {
    let timestamp: u64 = headers
        .get("x-slack-request-timestamp")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(timestamp) > window_secs {
        return None;
    }
    let given = headers
        .get("x-slack-signature")?
        .to_str()
        .ok()?
        .strip_prefix("v0=")
        .and_then(decode_hex)?;
    Some((timestamp, given))
}

/// The HMAC Slack hex-encodes into `X-Slack-Signature` after `v0=` (and the fake signs with).
pub fn slack_signature(signing_secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    hub_signature(signing_secret, &base)
}

impl Proof {
    /// What can be proved from the headers alone, before any of the body is read: a secret
    /// header in full (constant time); for Meta's signature, that one is there and has the
    /// shape of one (it covers the body, so it is checked once the body is read).
    pub fn admits(&self, headers: &http::HeaderMap) -> bool {
        match self {
            Self::HubSignature256 { .. } => headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(decode_hex)
                .is_some_and(|sig| sig.len() == 32),
            Self::SlackSignature { window_secs, .. } => {
                slack_headers(headers, *window_secs).is_some_and(|(_, sig)| sig.len() == 32)
            }
            Self::SecretHeader { .. } => self.verify(headers, &[]),
        }
    }
}

/// HMAC-SHA256 of `body` keyed with `key`: the bytes Meta hex-encodes into `X-Hub-Signature-256`
/// (and the fakes sign with).
pub fn hub_signature(key: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// What a hook checks before its sink sees a body.
#[derive(Clone, Debug)]
pub struct HookSettings {
    /// How calls are proved.
    pub proof: Proof,
    /// Meta's `hub.verify_token`, when the network subscribes with a GET handshake.
    pub verify_token: Option<Secret>,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
}

/// Why a sink did not take a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookRefusal {
    /// The body is not what the network sends (400; nothing was emitted). The reason names the
    /// field, never a value.
    #[error("malformed: {0}")]
    Malformed(String),
    /// An event could not be stored (503; the network delivers it again).
    #[error("not stored: {0}")]
    NotStored(String),
}

/// A connector's side of a hook: parses a proved body and emits its events.
pub trait HookSink: Send + Sync + 'static {
    /// Handles one proved body. Returns once every event in it is durably queued (or a
    /// duplicate); a malformed body must be refused before anything is emitted.
    fn deliver(&self, body: Bytes) -> BoxFuture<'static, Result<(), HookRefusal>>;
}

/// The checks of one account's hook, without its sink: what [`WebhookEndpoint`] runs before the
/// sink sees a body, and, as a [`Relay`], what any instance of a cluster runs before it keeps a
/// call for the account's owner (built from the configuration alone).
#[derive(Clone, Debug)]
pub struct HookCheck {
    account: String,
    settings: HookSettings,
}

impl HookCheck {
    /// The checks of `account`'s hook (the name is for logs).
    pub fn new(account: impl Into<String>, settings: HookSettings) -> Self {
        Self {
            account: account.into(),
            settings,
        }
    }

    fn handshake(&self, query: Option<&str>) -> Response {
        let Some(expected) = &self.settings.verify_token else {
            return text(405, "this hook takes POST only\n");
        };
        let mut mode = None;
        let mut challenge = None;
        let mut token = None;
        for (k, v) in query.map(parse_query).unwrap_or_default() {
            match k.as_str() {
                "hub.mode" => mode = Some(v),
                "hub.challenge" => challenge = Some(v),
                "hub.verify_token" => token = Some(v),
                _ => {}
            }
        }
        match (mode.as_deref(), challenge, token) {
            (Some("subscribe"), Some(challenge), Some(token)) if expected.matches(&token) => {
                tracing::info!(account = %self.account, "webhook subscription verified");
                text(200, &challenge)
            }
            (Some("subscribe"), Some(_), Some(_)) => {
                tracing::warn!(account = %self.account, "webhook subscription refused: wrong verify token");
                text(403, "verify token does not match\n")
            }
            _ => text(
                400,
                "expected hub.mode=subscribe, hub.challenge and hub.verify_token\n",
            ),
        }
    }

    /// The path and the method, then the proof as far as the headers carry it, and a declared
    /// length within the cap: a caller without the secret (or without a signature) never gets a
    /// byte of its body read.
    fn admit_head(&self, head: &http::request::Parts) -> Admission {
        let path = head.uri.path();
        if path != "/hooks" && path != "/hooks/" {
            return Admission::Answer(text(404, "no such endpoint\n"));
        }
        match head.method {
            http::Method::GET => return Admission::read(0),
            http::Method::POST => {}
            _ => return Admission::Answer(text(405, "this hook takes POST\n")),
        }
        if !self.settings.proof.admits(&head.headers) {
            tracing::warn!(account = %self.account, "webhook refused before its body: missing or wrong signature");
            return Admission::Answer(text(401, "signature missing or wrong\n"));
        }
        let declared = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.max_body as u64) {
            tracing::warn!(account = %self.account, "webhook refused before its body: too large");
            return Admission::Answer(text(413, "body too large\n"));
        }
        Admission::read(self.settings.max_body)
    }

    /// Everything but the sink: the path, the method (the handshake is answered here), the size
    /// and the proof over the raw body; `proved` skips the proof (a call another instance of
    /// the cluster proved and kept). `None` when the body goes on to the sink.
    fn check_whole(&self, request: &Request, proved: bool) -> Option<Response> {
        let path = request.uri().path();
        if path != "/hooks" && path != "/hooks/" {
            return Some(text(404, "no such endpoint\n"));
        }
        match *request.method() {
            http::Method::GET => return Some(self.handshake(request.uri().query())),
            http::Method::POST => {}
            _ => return Some(text(405, "this hook takes POST\n")),
        }
        let body = request.body();
        if body.len() > self.settings.max_body {
            tracing::warn!(account = %self.account, bytes = body.len(), "webhook refused: body too large");
            return Some(text(413, "body too large\n"));
        }
        if !proved && !self.settings.proof.verify(request.headers(), body) {
            tracing::warn!(account = %self.account, bytes = body.len(), "webhook refused: missing or wrong signature");
            return Some(text(401, "signature missing or wrong\n"));
        }
        None
    }
}

impl Relay for HookCheck {
    fn relays(&self, head: &http::request::Parts) -> bool {
        let path = head.uri.path();
        path == "/hooks" || path == "/hooks/"
    }

    fn admit(&self, head: &http::request::Parts) -> Admission {
        self.admit_head(head)
    }

    /// Proved bodies are kept when they are JSON (every network here sends JSON; a body that is
    /// not is refused 400 at once, as the sink would); the handshake is answered here.
    fn check(&self, request: &Request) -> Relaying {
        match self.check_whole(request, false) {
            Some(answer) => Relaying::Answer(answer),
            None => {
                let body = request.body();
                if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                    tracing::warn!(account = %self.account, bytes = body.len(), "webhook refused: body is not JSON");
                    return Relaying::Answer(text(400, "malformed: body is not JSON\n"));
                }
                Relaying::Keep(text(200, "ok\n"))
            }
        }
    }
}

/// Serves one account's hook: checks, then hands the body to a [`HookSink`].
pub struct WebhookEndpoint {
    check: HookCheck,
    sink: Arc<dyn HookSink>,
}

impl WebhookEndpoint {
    /// An endpoint for `account` (named in logs) checking `settings` before `sink`.
    pub fn new(
        account: impl Into<String>,
        settings: HookSettings,
        sink: Arc<dyn HookSink>,
    ) -> Self {
        Self {
            check: HookCheck::new(account, settings),
            sink,
        }
    }

    fn serve(&self, request: Request, proved: bool) -> BoxFuture<'static, Response> {
        if let Some(answer) = self.check.check_whole(&request, proved) {
            return Box::pin(async move { answer });
        }
        let body = request.into_body();
        let account = self.check.account.clone();
        let sink = self.sink.clone();
        Box::pin(async move {
            match sink.deliver(body).await {
                Ok(()) => text(200, "ok\n"),
                Err(HookRefusal::Malformed(why)) => {
                    tracing::warn!(account = %account, reason = %why, "webhook refused: malformed body");
                    text(400, &format!("malformed: {why}\n"))
                }
                Err(HookRefusal::NotStored(why)) => {
                    tracing::warn!(account = %account, reason = %why, "webhook not stored; the network will deliver it again");
                    text(503, "not stored, deliver again\n")
                }
            }
        })
    }
}

impl HttpHandler for WebhookEndpoint {
    fn admit(&self, head: &http::request::Parts) -> Admission {
        self.check.admit_head(head)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        self.serve(request, false)
    }

    /// Proved where it was received: a signature with a time window (Slack's) may have aged
    /// past it while the call waited for this instance.
    fn handle_relayed(&self, request: Request) -> BoxFuture<'static, Response> {
        self.serve(request, true)
    }
}

/// Splits a query string into decoded pairs (`+` is a space, `%XX` a byte).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s.get(i + 1..i + 3).and_then(decode_hex).as_deref() {
                Some(&[b]) => {
                    out.push(b);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: u16, body: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(crate::http::Body::from(body.to_owned()))
        .unwrap_or_else(|_| http::Response::new(crate::http::Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it was given; refuses bodies that are not JSON objects, as a real sink would.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Bytes>>);

    impl HookSink for Arc<Recorder> {
        fn deliver(&self, body: Bytes) -> BoxFuture<'static, Result<(), HookRefusal>> {
            let me = self.clone();
            Box::pin(async move {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) if v.is_object() => {
                        me.0.lock().unwrap().push(body);
                        Ok(())
                    }
                    _ => Err(HookRefusal::Malformed("not a JSON object".into())),
                }
            })
        }
    }

    fn meta_endpoint() -> (WebhookEndpoint, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        let settings = HookSettings {
            proof: Proof::HubSignature256 {
                app_secret: Secret::new("app-secret"),
            },
            verify_token: Some(Secret::new("verify-me")),
            max_body: 64,
        };
        (
            WebhookEndpoint::new("wa", settings, Arc::new(rec.clone())),
            rec,
        )
    }

    fn post(body: &str, signature: Option<String>) -> Request {
        let mut b = http::Request::builder().method("POST").uri("/hooks");
        if let Some(s) = signature {
            b = b.header("X-Hub-Signature-256", s);
        }
        b.body(Bytes::from(body.to_owned())).unwrap()
    }

    fn sign(body: &str) -> String {
        format!(
            "sha256={}",
            encode_hex(&hub_signature(b"app-secret", body.as_bytes()))
        )
    }

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // `printf '{"a":1}' | openssl dgst -sha256 -hmac app-secret`
        assert_eq!(
            encode_hex(&hub_signature(b"app-secret", br#"{"a":1}"#)),
            "a2ac6607a24977f9757e6d78319ae1660ad42ffeee0ee3f0dff30a92bcf85448"
        );
    }

    #[tokio::test]
    async fn a_signed_body_is_delivered_and_anything_else_is_refused_unread() {
        let (ep, rec) = meta_endpoint();
        let body = r#"{"object":"page"}"#;
        let ok = ep.handle(post(body, Some(sign(body)))).await;
        assert_eq!(ok.status(), 200);
        // Forged: signed with another secret; a signature over another body; none; not hex.
        let forged = format!(
            "sha256={}",
            encode_hex(&hub_signature(b"other-secret", body.as_bytes()))
        );
        for sig in [
            Some(forged),
            Some(sign("{}")),
            None,
            Some("sha256=zz".into()),
        ] {
            let r = ep.handle(post(body, sig)).await;
            assert_eq!(r.status(), 401);
        }
        // Upper-case hex is the same signature.
        let upper = sign(body).to_uppercase().replace("SHA256=", "sha256=");
        assert_eq!(ep.handle(post(body, Some(upper))).await.status(), 200);
        // Malformed but signed: 400 from the sink; oversized: 413 before the signature.
        assert_eq!(
            ep.handle(post("[1]", Some(sign("[1]")))).await.status(),
            400
        );
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
        assert_eq!(ep.handle(post(&big, Some(sign(&big)))).await.status(), 413);
        assert_eq!(rec.0.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_relay_keeps_only_what_the_endpoint_would_take_and_a_kept_call_is_not_proved_again()
    {
        let settings = HookSettings {
            proof: Proof::HubSignature256 {
                app_secret: Secret::new("app-secret"),
            },
            verify_token: Some(Secret::new("verify-me")),
            max_body: 64,
        };
        let relay = HookCheck::new("wa", settings);
        let body = r#"{"object":"page"}"#;
        let kept = |r: Relaying| match r {
            Relaying::Keep(answer) => Some(answer.status().as_u16()),
            Relaying::Answer(_) => None,
        };
        let answered = |r: Relaying| match r {
            Relaying::Answer(answer) => answer.status().as_u16(),
            Relaying::Keep(_) => 0,
        };
        assert!(relay.relays(&post(body, None).into_parts().0));
        let other = http::Request::builder().uri("/media/1").body(()).unwrap();
        assert!(!relay.relays(&other.into_parts().0));
        assert_eq!(kept(relay.check(&post(body, Some(sign(body))))), Some(200));
        // Forged, unsigned, signed but not JSON, too large: answered, never kept.
        let forged = format!(
            "sha256={}",
            encode_hex(&hub_signature(b"other-secret", body.as_bytes()))
        );
        assert_eq!(answered(relay.check(&post(body, Some(forged)))), 401);
        assert_eq!(answered(relay.check(&post(body, None))), 401);
        assert_eq!(
            answered(relay.check(&post("{\"a\":", Some(sign("{\"a\":"))))),
            400
        );
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
        assert_eq!(answered(relay.check(&post(&big, Some(sign(&big))))), 413);
        // The handshake needs no connector: answered where it arrives.
        let get = http::Request::builder()
            .method("GET")
            .uri("/hooks?hub.mode=subscribe&hub.challenge=77&hub.verify_token=verify-me")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(answered(relay.check(&get)), 200);
        // The owner's endpoint takes a kept call as proved (the relay checked it), and still
        // refuses what is not a proper hook call.
        let (ep, rec) = meta_endpoint();
        assert_eq!(ep.handle_relayed(post(body, None)).await.status(), 200);
        assert_eq!(ep.handle(post(body, None)).await.status(), 401);
        assert_eq!(ep.handle_relayed(post(&big, None)).await.status(), 413);
        assert_eq!(rec.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_meta_handshake_echoes_the_challenge_only_for_the_right_token() {
        let (ep, _) = meta_endpoint();
        let get = |q: &str| {
            http::Request::builder()
                .method("GET")
                .uri(format!("/hooks?{q}"))
                .body(Bytes::new())
                .unwrap()
        };
        let ok = ep
            .handle(get(
                "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me",
            ))
            .await;
        assert_eq!(ok.status(), 200);
        assert_eq!(
            ok.body().as_bytes().map(|b| b.as_ref()),
            Some(&b"1158201444"[..])
        );
        let bad = ep
            .handle(get(
                "hub.mode=subscribe&hub.challenge=1&hub.verify_token=guess",
            ))
            .await;
        assert_eq!(bad.status(), 403);
        assert_eq!(ep.handle(get("hub.mode=subscribe")).await.status(), 400);
    }

    #[tokio::test]
    async fn a_secret_header_is_compared_whole() {
        let rec = Arc::new(Recorder::default());
        let ep = WebhookEndpoint::new(
            "tg",
            HookSettings {
                proof: Proof::SecretHeader {
                    header: "x-telegram-bot-api-secret-token",
                    token: Secret::new("s3cret_token-1"),
                },
                verify_token: None,
                max_body: DEFAULT_MAX_BODY,
            },
            Arc::new(rec.clone()),
        );
        let req = |token: Option<&str>| {
            let mut b = http::Request::builder().method("POST").uri("/hooks");
            if let Some(t) = token {
                b = b.header("X-Telegram-Bot-Api-Secret-Token", t);
            }
            b.body(Bytes::from_static(b"{}")).unwrap()
        };
        assert_eq!(ep.handle(req(Some("s3cret_token-1"))).await.status(), 200);
        for bad in [Some("s3cret_token-"), Some("s3cret_token-12"), None] {
            assert_eq!(ep.handle(req(bad)).await.status(), 401);
        }
        assert_eq!(rec.0.lock().unwrap().len(), 1);
    }

    fn head(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri("/hooks");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_call_without_its_proof_or_too_large_is_refused_before_its_body_is_read() {
        let (meta, _) = meta_endpoint();
        let status = |a: Admission| match a {
            Admission::Answer(r) => r.status().as_u16(),
            Admission::Read { max_body } => {
                assert_eq!(max_body, 64);
                0
            }
        };
        let good = sign("{}");
        assert_eq!(
            status(meta.admit(&head("POST", &[("x-hub-signature-256", &good)]))),
            0
        );
        assert_eq!(status(meta.admit(&head("POST", &[]))), 401);
        assert_eq!(
            status(meta.admit(&head("POST", &[("x-hub-signature-256", "sha256=abcd")]))),
            401
        );
        assert_eq!(
            status(meta.admit(&head(
                "POST",
                &[
                    ("x-hub-signature-256", &good),
                    ("content-length", "16777216")
                ]
            ))),
            413
        );
        assert!(matches!(
            meta.admit(&head("GET", &[])),
            Admission::Read { max_body: 0 }
        ));
        assert_eq!(status(meta.admit(&head("DELETE", &[]))), 405);
        let tg = WebhookEndpoint::new(
            "tg",
            HookSettings {
                proof: Proof::SecretHeader {
                    header: "x-telegram-bot-api-secret-token",
                    token: Secret::new("s3cret_token-1"),
                },
                verify_token: None,
                max_body: 64,
            },
            Arc::new(Arc::new(Recorder::default())),
        );
        let with = |t: &str| tg.admit(&head("POST", &[("x-telegram-bot-api-secret-token", t)]));
        assert_eq!(status(with("s3cret_token-1")), 0);
        assert_eq!(status(with("s3cret_token-")), 401);
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            parse_query("a=b%20c&d=e+f&g=%zz&h"),
            vec![
                ("a".into(), "b c".into()),
                ("d".into(), "e f".into()),
                ("g".into(), "%zz".into()),
                ("h".into(), "".into())
            ]
        );
    }

    #[test]
    fn slack_signatures_follow_slacks_documented_example() {
        // The worked example of https://api.slack.com/authentication/verifying-requests-from-slack.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = slack_signature(
            b"8f742231b10e8888abcd99yyyzzz85a5",
            1531420618,
            body.as_bytes(),
        );
        assert_eq!(
            encode_hex(&sig),
            "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        let proof = Proof::SlackSignature {
            signing_secret: Secret::new("8f742231b10e8888abcd99yyyzzz85a5"),
            window_secs: 300,
        };
        let headers = |ts: u64, body: &str| {
            let mut h = http::HeaderMap::new();
            let sig = encode_hex(&slack_signature(
                b"8f742231b10e8888abcd99yyyzzz85a5",
                ts,
                body.as_bytes(),
            ));
            h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
            h.insert("x-slack-signature", format!("v0={sig}").parse().unwrap());
            h
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            proof.admits(&headers(now, body)) && proof.verify(&headers(now, body), body.as_bytes())
        );
        // The documented call itself is a replay now: its timestamp is years old.
        assert!(!proof.verify(&headers(1531420618, body), body.as_bytes()));
        assert!(!proof.admits(&headers(now - 301, body)));
        // Another body under the same signature.
        assert!(!proof.verify(&headers(now, body), b"token=forged"));
        assert!(!proof.admits(&http::HeaderMap::new()));
    }
}
