//! The account's HTTP endpoints on the daemon's listener:
//!
//! - `/hooks/NAME` (with `mode = "events"`): Slack's Events API. Every call is proved by
//!   `X-Slack-Signature` over the raw body with `X-Slack-Request-Timestamp` within 5 minutes
//!   (the SDK's [`Proof::SlackSignature`], constant time); a missing, wrong or stale signature is
//!   401 and the body is never parsed. `url_verification` is answered with its challenge;
//!   an `event_callback` is answered 200 only once its events are stored (503 otherwise, so Slack
//!   retries; its copies are duplicates the daemon drops).
//! - `/accounts/NAME/media/…`: signed links to Slack's files, fetched with the bot token
//!   (`files.info`, then `url_private_download`), when `media_public_url` is set.

use crate::api::{Api, Tier};
use crate::inbound::{Intake, valid_id};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use passerelle_sdk::Secret;
use passerelle_sdk::http::{
    Admission, Body, HttpHandler, Request, Response, json_response, text_response,
};
use passerelle_sdk::signed_link::{self, SignedLinks};
use passerelle_sdk::webhook::Proof;
use serde_json::Value;
use std::sync::Arc;

/// The largest Events API body taken.
pub const MAX_BODY: usize = 1024 * 1024;

/// Everything the account serves.
pub struct Endpoints {
    /// The account, for logs.
    pub account: String,
    /// The signing secret, in events mode.
    pub signing: Option<Secret>,
    /// Where events go.
    pub intake: Arc<Intake>,
    /// Signed file links, when offered.
    pub links: Option<SignedLinks>,
    /// For `files.info` and the download.
    pub api: Api,
    /// File size cap.
    pub max_bytes: u64,
}

fn is_hook(path: &str) -> bool {
    path == "/hooks" || path == "/hooks/"
}

impl Endpoints {
    fn proof(&self) -> Option<Proof> {
        self.signing.as_ref().map(|s| Proof::SlackSignature {
            signing_secret: s.clone(),
            window_secs: 300,
        })
    }
}

impl HttpHandler for Endpoints {
    fn admit(&self, head: &http::request::Parts) -> Admission {
        if !is_hook(head.uri.path()) {
            return signed_link::admit_media(head);
        }
        admit_hook(&self.account, self.proof().as_ref(), head)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        if !is_hook(request.uri().path()) {
            return self.media(request);
        }
        self.hook(request, false)
    }

    /// Proved where it was received, maybe longer ago than the signature's 5-minute window.
    fn handle_relayed(&self, request: Request) -> BoxFuture<'static, Response> {
        self.hook(request, true)
    }
}

/// The hook's checks from the head: a POST whose signature headers are there, well formed and
/// within the window.
fn admit_hook(account: &str, proof: Option<&Proof>, head: &http::request::Parts) -> Admission {
    let Some(proof) = proof else {
        return Admission::Answer(text_response(
            404,
            "this account uses Socket Mode; no hook\n",
        ));
    };
    if head.method != http::Method::POST {
        return Admission::Answer(text_response(405, "this hook takes POST\n"));
    }
    if !proof.admits(&head.headers) {
        tracing::warn!(account = %account, "Slack hook refused before its body: signature missing, malformed or stale");
        return Admission::Answer(text_response(401, "signature missing or wrong\n"));
    }
    Admission::read(MAX_BODY)
}

/// What a whole call to the hook is, once its size and (unless `proved`) its signature are
/// checked: the verification challenge answered, an `event_callback` to take, or an answer.
enum Call {
    Events(Value),
    Answer(Response),
}

fn check_hook(account: &str, proof: Option<&Proof>, request: &Request, proved: bool) -> Call {
    let Some(proof) = proof else {
        return Call::Answer(text_response(404, "no hook\n"));
    };
    let body = request.body();
    if body.len() > MAX_BODY {
        return Call::Answer(text_response(413, "body too large\n"));
    }
    if !proved && !proof.verify(request.headers(), body) {
        tracing::warn!(account = %account, "Slack hook refused: wrong or stale signature");
        return Call::Answer(text_response(401, "signature missing or wrong\n"));
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return Call::Answer(text_response(400, "malformed: body is not JSON\n"));
    };
    match payload.get("type").and_then(Value::as_str) {
        Some("url_verification") => match payload.get("challenge").and_then(Value::as_str) {
            Some(c) if c.len() <= 256 => {
                Call::Answer(json_response(200, &serde_json::json!({"challenge": c})))
            }
            _ => Call::Answer(text_response(400, "malformed: no challenge\n")),
        },
        Some("event_callback") => Call::Events(payload),
        // app_rate_limited and others: nothing to carry.
        Some(_) => Call::Answer(text_response(200, "ok\n")),
        None => Call::Answer(text_response(400, "malformed: no type\n")),
    }
}

impl Endpoints {
    fn hook(&self, request: Request, proved: bool) -> BoxFuture<'static, Response> {
        let account = self.account.clone();
        let payload = match check_hook(&account, self.proof().as_ref(), &request, proved) {
            Call::Answer(answer) => return Box::pin(async move { answer }),
            Call::Events(payload) => payload,
        };
        let intake = self.intake.clone();
        Box::pin(async move {
            match intake.take(&payload).await {
                Ok(()) => text_response(200, "ok\n"),
                Err(e) => {
                    tracing::warn!(account = %account, error = %e, "Slack event not stored; Slack will deliver it again");
                    text_response(503, "not stored, deliver again\n")
                }
            }
        })
    }
}

/// Events mode's hook at any instance of a cluster (see `passerelle_sdk::relay`): proved as
/// the running connector proves it; the verification challenge is answered at once, events are
/// kept for the account's owner.
pub struct HookRelay {
    /// The account, for logs.
    pub account: String,
    /// The signing secret.
    pub signing: Secret,
}

impl HookRelay {
    fn proof(&self) -> Proof {
        Proof::SlackSignature {
            signing_secret: self.signing.clone(),
            window_secs: 300,
        }
    }
}

impl passerelle_sdk::relay::Relay for HookRelay {
    fn relays(&self, head: &http::request::Parts) -> bool {
        is_hook(head.uri.path())
    }

    fn admit(&self, head: &http::request::Parts) -> Admission {
        admit_hook(&self.account, Some(&self.proof()), head)
    }

    fn check(&self, request: &Request) -> passerelle_sdk::relay::Relaying {
        use passerelle_sdk::relay::Relaying;
        match check_hook(&self.account, Some(&self.proof()), request, false) {
            Call::Answer(answer) => Relaying::Answer(answer),
            Call::Events(_) => Relaying::Keep(text_response(200, "ok\n")),
        }
    }
}

impl Endpoints {
    fn media(&self, request: Request) -> BoxFuture<'static, Response> {
        let api = self.api.clone();
        let max = self.max_bytes;
        signed_link::serve(self.links.as_ref(), &request, move |file_id| async move {
            if !valid_id(&file_id) {
                return Err((404, "file not available\n"));
            }
            let info = api
                .get("files.info", &[("file", file_id)], Tier::T4)
                .await
                .map_err(|_| (404, "file not available\n"))?;
            let file = info.get("file").ok_or((404, "file not available\n"))?;
            let url = file
                .get("url_private_download")
                .or_else(|| file.get("url_private"))
                .and_then(Value::as_str)
                .ok_or((404, "file not available\n"))?;
            if file
                .get("size")
                .and_then(Value::as_u64)
                .is_some_and(|s| s > max)
            {
                return Err((413, "file too large\n"));
            }
            let mime = file
                .get("mimetype")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream")
                .to_owned();
            let answer = api
                .http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, api.bearer())
                .send()
                .await
                .map_err(|_| (502, "download failed\n"))?;
            if !answer.status().is_success() {
                return Err((502, "download failed\n"));
            }
            let len = answer.content_length();
            if len.is_some_and(|l| l > max) {
                return Err((413, "file too large\n"));
            }
            let stream = answer
                .bytes_stream()
                .map_err(|e| std::io::Error::other(e.to_string()));
            Ok(signed_link::File {
                body: Body::capped(stream, max),
                mime,
                len,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_sdk::relay::{Relay, Relaying};
    use passerelle_sdk::webhook::{encode_hex, slack_signature};

    fn call(body: &str, at: u64, secret: &[u8]) -> Request {
        let sig = encode_hex(&slack_signature(secret, at, body.as_bytes()));
        http::Request::builder()
            .method("POST")
            .uri("/hooks")
            .header("x-slack-request-timestamp", at.to_string())
            .header("x-slack-signature", format!("v0={sig}"))
            .body(bytes::Bytes::from(body.to_owned()))
            .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn the_relay_keeps_signed_events_answers_the_challenge_and_refuses_the_rest() {
        let relay = HookRelay {
            account: "slack".into(),
            signing: Secret::new("8f742231b10e8888abcd99yyyzzz85a5"),
        };
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let status = |r: Relaying| match r {
            Relaying::Keep(a) => ("keep", a.status().as_u16()),
            Relaying::Answer(a) => ("answer", a.status().as_u16()),
        };
        let event = r#"{"type":"event_callback","event":{"type":"message"}}"#;
        assert_eq!(
            status(relay.check(&call(event, now(), secret))),
            ("keep", 200)
        );
        let challenge = r#"{"type":"url_verification","challenge":"3eZbrw1aB"}"#;
        assert_eq!(
            status(relay.check(&call(challenge, now(), secret))),
            ("answer", 200)
        );
        // Another secret, a stale timestamp (a replay), a signed body that is not JSON.
        assert_eq!(
            status(relay.check(&call(event, now(), b"another-secret"))),
            ("answer", 401)
        );
        assert_eq!(
            status(relay.check(&call(event, now() - 600, secret))),
            ("answer", 401)
        );
        assert_eq!(
            status(relay.check(&call("{\"type\":", now(), secret))),
            ("answer", 400)
        );
        let media = http::Request::builder()
            .uri("/media/F1/sig")
            .body(())
            .unwrap();
        assert!(!relay.relays(&media.into_parts().0));
    }
}
