//! The account's HTTP endpoints: the webhook (`/hooks/NAME`, webhook mode; its secret header is
//! checked by the SDK's [`WebhookEndpoint`] before the body is read) and the signed file links
//! (`/accounts/NAME/media/…`), which fetch the file through `getFile` with the bot's token.

use crate::api::BotApi;
use crate::intake::Intake;
use bytes::Bytes;
use futures::future::BoxFuture;
use passerelle_sdk::http::{HttpHandler, Request, Response};
use passerelle_sdk::signed_link::SignedLinks;
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

fn plain(status: u16, text: &'static str) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

impl HttpHandler for Endpoints {
    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let path = request.uri().path().to_owned();
        if path == "/hooks" || path == "/hooks/" {
            return match &self.webhook {
                Some(w) => w.handle(request),
                None => Box::pin(async { plain(404, "this account polls; no webhook\n") }),
            };
        }
        let Some(links) = &self.links else {
            return Box::pin(async { plain(404, "no such endpoint\n") });
        };
        let file_id = match links.check(&path) {
            None => return Box::pin(async { plain(404, "no such endpoint\n") }),
            Some(Err(())) => return Box::pin(async { plain(403, "bad signature\n") }),
            Some(Ok(id)) => id.to_owned(),
        };
        if request.method() != http::Method::GET {
            return Box::pin(async { plain(405, "GET only\n") });
        }
        let api = self.api.clone();
        let max = self.max_bytes;
        Box::pin(async move {
            let file = match api
                .call("getFile", &serde_json::json!({"file_id": file_id}))
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::info!(error = %e, "file link: getFile failed");
                    return plain(404, "file not available\n");
                }
            };
            let Some(file_path) = file.get("file_path").and_then(Value::as_str) else {
                return plain(404, "file too large for the Bot API\n");
            };
            match api.download(file_path, max).await {
                Ok(data) => http::Response::builder()
                    .status(200)
                    .header(http::header::CONTENT_TYPE, mime_of(file_path))
                    .body(Bytes::from(data))
                    .unwrap_or_else(|_| plain(500, "response\n")),
                Err(e) => {
                    tracing::info!(error = %e, "file link: download failed");
                    plain(502, "download failed\n")
                }
            }
        })
    }
}
