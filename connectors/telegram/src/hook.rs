//! The account's HTTP endpoints: the webhook (`/hooks/NAME`, webhook mode; its secret header is
//! checked by the SDK's [`WebhookEndpoint`] before the body is read) and the signed file links
//! (`/accounts/NAME/media/…`), which fetch the file through `getFile` with the bot's token.

use crate::api::BotApi;
use crate::intake::Intake;
use bytes::Bytes;
use futures::future::BoxFuture;
use passerelle_sdk::http::text_response;
use passerelle_sdk::http::{HttpHandler, Request, Response};
use passerelle_sdk::signed_link::{self, SignedLinks};
use passerelle_sdk::webhook::{HookRefusal, HookSink, WebhookEndpoint};
use serde_json::Value;
use std::sync::Arc;

/// Takes one webhook update (Telegram posts one `Update` per call).
pub struct Sink(pub Arc<Intake>);

impl HookSink for Sink {
    fn deliver(&self, body: Bytes) -> BoxFuture<'static, Result<(), HookRefusal>> {
        let intake = self.0.clone();
        Box::pin(async move {
            let update: Value = serde_json::from_slice(&body)
                .map_err(|_| HookRefusal::Malformed("body is not JSON".into()))?;
            if update.get("update_id").and_then(Value::as_i64).is_none() {
                return Err(HookRefusal::Malformed("no integer update_id".into()));
            }
            intake
                .take(&update)
                .await
                .map_err(|e| HookRefusal::NotStored(e.to_string()))
        })
    }
}

/// Everything the account serves.
pub struct Endpoints {
    /// `/hooks`, in webhook mode.
    pub webhook: Option<WebhookEndpoint>,
    /// Signed file links, when offered.
    pub links: Option<SignedLinks>,
    /// For `getFile` and the download.
    pub api: BotApi,
    /// File size cap.
    pub max_bytes: u64,
}

/// A MIME type from a Telegram file path's extension (the download itself says none worth using).
fn mime_of(path: &str) -> &'static str {
    match path
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("mp4") => "video/mp4",
        Some("oga" | "ogg") => "audio/ogg",
        Some("mp3") => "audio/mpeg",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

impl HttpHandler for Endpoints {
    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        let path = head.uri.path();
        if path == "/hooks" || path == "/hooks/" {
            return match &self.webhook {
                Some(w) => w.admit(head),
                None => passerelle_sdk::Admission::Answer(text_response(
                    404,
                    "this account polls; no webhook\n",
                )),
            };
        }
        signed_link::admit_media(head)
    }

    /// Only the hook is ever relayed.
    fn handle_relayed(&self, request: Request) -> BoxFuture<'static, Response> {
        match &self.webhook {
            Some(w) => w.handle_relayed(request),
            None => Box::pin(async { text_response(404, "this account polls; no webhook\n") }),
        }
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let path = request.uri().path();
        if path == "/hooks" || path == "/hooks/" {
            return match &self.webhook {
                Some(w) => w.handle(request),
                None => Box::pin(async { text_response(404, "this account polls; no webhook\n") }),
            };
        }
        let api = self.api.clone();
        let max = self.max_bytes;
        signed_link::serve(self.links.as_ref(), &request, move |file_id| async move {
            let file = api
                .call("getFile", &serde_json::json!({"file_id": file_id}))
                .await
                .map_err(|e| {
                    tracing::info!(error = %e, "file link: getFile failed");
                    (404, "file not available\n")
                })?;
            let file_path = file
                .get("file_path")
                .and_then(Value::as_str)
                .ok_or((404, "file too large for the Bot API\n"))?;
            let (body, len) = api.download(file_path, max).await.map_err(|e| {
                tracing::info!(error = %e, "file link: download failed");
                (502, "download failed\n")
            })?;
            Ok(signed_link::File {
                body,
                mime: mime_of(file_path).to_owned(),
                len,
            })
        })
    }
}
