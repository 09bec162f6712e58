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
        let Some(proof) = self.proof() else {
            return Admission::Answer(text_response(
                404,
                "this account uses Socket Mode; no hook\n",
            ));
        };
        if head.method != http::Method::POST {
            return Admission::Answer(text_response(405, "this hook takes POST\n"));
        }
        if !proof.admits(&head.headers) {
            tracing::warn!(account = %self.account, "Slack hook refused before its body: signature missing, malformed or stale");
            return Admission::Answer(text_response(401, "signature missing or wrong\n"));
        }
        Admission::read(MAX_BODY)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        if !is_hook(request.uri().path()) {
            return self.media(request);
        }
        let account = self.account.clone();
        let Some(proof) = self.proof() else {
            return Box::pin(async { text_response(404, "no hook\n") });
        };
        let (parts, body) = request.into_parts();
        if body.len() > MAX_BODY {
            return Box::pin(async { text_response(413, "body too large\n") });
        }
        if !proof.verify(&parts.headers, &body) {
            tracing::warn!(account = %account, "Slack hook refused: wrong or stale signature");
            return Box::pin(async { text_response(401, "signature missing or wrong\n") });
        }
        let intake = self.intake.clone();
        Box::pin(async move {
            let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
                return text_response(400, "malformed: body is not JSON\n");
            };
            match payload.get("type").and_then(Value::as_str) {
                Some("url_verification") => {
                    match payload.get("challenge").and_then(Value::as_str) {
                        Some(c) if c.len() <= 256 => {
                            json_response(200, &serde_json::json!({"challenge": c}))
                        }
                        _ => text_response(400, "malformed: no challenge\n"),
                    }
                }
                Some("event_callback") => match intake.take(&payload).await {
                    Ok(()) => text_response(200, "ok\n"),
                    Err(e) => {
                        tracing::warn!(account = %account, error = %e, "Slack event not stored; Slack will deliver it again");
                        text_response(503, "not stored, deliver again\n")
                    }
                },
                // app_rate_limited and others: nothing to carry.
                Some(_) => text_response(200, "ok\n"),
                None => text_response(400, "malformed: no type\n"),
            }
        })
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
