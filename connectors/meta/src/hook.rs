//! The account's HTTP endpoints on the daemon's listener: the webhook (`/hooks/NAME`, checked by
//! the SDK's [`WebhookEndpoint`] before [`Sink`] parses it) and, for WhatsApp with
//! `media_public_url`, the signed media links (`/accounts/NAME/media/…`), which fetch the file
//! through the Graph API's authenticated media endpoints.

use crate::graph::Graph;
use crate::inbound::{Item, Parser, Status};
use crate::kind::Kind;
use bytes::Bytes;
use futures::future::BoxFuture;
use passerelle_sdk::http::{HttpHandler, Request, Response};
use passerelle_sdk::signed_link::{self, SignedLinks};
use passerelle_sdk::webhook::{HookRefusal, HookSink, WebhookEndpoint};
use passerelle_sdk::{Emitter, Event, EventKind, StateHandle, Text};
use serde_json::Value;

/// Parses proved webhook bodies and emits their events.
#[derive(Clone)]
pub struct Sink {
    /// The account's network.
    pub kind: Kind,
    /// Its phone number, Page or Instagram account id.
    pub id: String,
    /// Signed links for WhatsApp files.
    pub links: Option<SignedLinks>,
    /// Where events go.
    pub emitter: Emitter,
    /// Where statuses and reactions are remembered.
    pub state: StateHandle,
    /// For logs.
    pub account: String,
    /// For people's names (Messenger, Instagram).
    pub graph: Graph,
    /// Names already asked for.
    pub profiles: std::sync::Arc<crate::profile::Profiles>,
}

fn stored<T>(r: Result<T, passerelle_sdk::EmitError>) -> Result<T, HookRefusal> {
    r.map_err(|e| HookRefusal::NotStored(e.to_string()))
}

impl Sink {
    async fn handle(self, body: Bytes) -> Result<(), HookRefusal> {
        let parser = Parser {
            kind: self.kind,
            id: &self.id,
            links: self.links.as_ref(),
        };
        let batch = parser
            .parse(&body)
            .map_err(|m| HookRefusal::Malformed(m.0))?;
        if batch.foreign > 0 {
            tracing::info!(account = %self.account, entries = batch.foreign, "webhook entries for another number, Page or account dropped");
        }
        for what in &batch.skipped {
            tracing::debug!(account = %self.account, item = what, "webhook item not bridged");
        }
        for item in batch.events {
            match item {
                Item::Event(mut event) => {
                    self.profiles
                        .name(self.kind, &self.graph, &mut event.sender)
                        .await;
                    stored(self.emitter.emit(event).await)?;
                }
                Item::Reaction(mut event) => {
                    self.profiles
                        .name(self.kind, &self.graph, &mut event.sender)
                        .await;
                    self.reaction(event).await?
                }
            }
        }
        for status in batch.statuses {
            self.record(status).await?;
        }
        Ok(())
    }

    /// Emits a reaction, keeping one reaction per person and message as these networks do: a new
    /// one replaces the old (which is taken back first), and a removal names the one it removes.
    async fn reaction(&self, event: Event) -> Result<(), HookRefusal> {
        let EventKind::Reaction {
            target,
            key,
            removed,
        } = &event.kind
        else {
            return Ok(());
        };
        let (room, sender) = (event.room.as_str(), event.sender.id.as_str());
        let slot = passerelle_sdk::state::key(&["reaction", room, sender, target.as_str()]);
        // Before 0.2 the parts were joined with `/`.
        let legacy = format!("reaction/{room}/{sender}/{}", target.as_str());
        let state = |e: passerelle_sdk::StateError| HookRefusal::NotStored(e.to_string());
        let before = self
            .state
            .get_moved(&slot, &legacy)
            .await
            .map_err(state)?
            .and_then(|v| String::from_utf8(v).ok());
        let take_back = |old: String, suffix: &str| {
            let mut e = event.clone();
            e.key = passerelle_sdk::EventKey::new();
            e.kind = EventKind::Reaction {
                target: target.clone(),
                key: Text::new(old),
                removed: true,
            };
            e.remote_id = event
                .remote_id
                .as_ref()
                .map(|r| format!("{}{suffix}", r.as_str()).into());
            e
        };
        if *removed {
            match before {
                Some(old) => {
                    stored(self.emitter.emit(take_back(old, "")).await)?;
                    self.state.delete(&slot).await.map_err(state)?;
                }
                None => {
                    tracing::debug!(account = %self.account, "reaction removal for a reaction not seen")
                }
            }
            return Ok(());
        }
        if let Some(old) = before.filter(|old| old != key.as_str()) {
            stored(self.emitter.emit(take_back(old, ":replaced")).await)?;
        }
        stored(self.emitter.emit(event.clone()).await)?;
        self.state
            .put_record(&slot, key.as_str().as_bytes().to_vec())
            .await
            .map_err(state)
    }

    /// Records a delivery status (ids and status only), kept with the message map's retention.
    async fn record(&self, s: Status) -> Result<(), HookRefusal> {
        let key = match &s.message_id {
            Some(id) => passerelle_sdk::state::key(&["delivery", id]),
            None => passerelle_sdk::state::key(&["delivery", "read", &s.recipient]),
        };
        let value = serde_json::json!({
            "status": s.status, "recipient": s.recipient, "at": s.at, "error_code": s.error_code,
        });
        if s.status == "failed" {
            tracing::warn!(account = %self.account, message = ?s.message_id, error_code = ?s.error_code, "Meta reports a message as not delivered");
        } else {
            tracing::debug!(account = %self.account, message = ?s.message_id, status = %s.status, "delivery status");
        }
        self.state
            .put_record(&key, value.to_string())
            .await
            .map_err(|e| HookRefusal::NotStored(e.to_string()))
    }
}

impl HookSink for Sink {
    fn deliver(&self, body: Bytes) -> BoxFuture<'static, Result<(), HookRefusal>> {
        Box::pin(self.clone().handle(body))
    }
}

/// Everything the account serves.
pub struct Endpoints {
    /// `/hooks`.
    pub webhook: WebhookEndpoint,
    /// Signed media links, when offered.
    pub links: Option<SignedLinks>,
    /// For fetching media.
    pub graph: Graph,
    /// File size cap.
    pub max_bytes: u64,
}

impl HttpHandler for Endpoints {
    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        let path = head.uri.path();
        if path == "/hooks" || path == "/hooks/" {
            return self.webhook.admit(head);
        }
        signed_link::admit_media(head)
    }

    /// Only the hook is ever relayed.
    fn handle_relayed(&self, request: Request) -> BoxFuture<'static, Response> {
        self.webhook.handle_relayed(request)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let path = request.uri().path();
        if path == "/hooks" || path == "/hooks/" {
            return self.webhook.handle(request);
        }
        let graph = self.graph.clone();
        let max = self.max_bytes;
        signed_link::serve(self.links.as_ref(), &request, move |id| async move {
            // The media object names a short-lived URL, itself fetched with the token.
            let info = graph.get(&id).await.map_err(|e| {
                tracing::info!(error = %e, "media link: file not available");
                (404, "file not available\n")
            })?;
            let url = info
                .get("url")
                .and_then(Value::as_str)
                .ok_or((502, "media object without url\n"))?;
            if !graph.may_carry_token(url) {
                tracing::warn!("media link: the API named a download URL the token must not go to");
                return Err((502, "untrusted media url\n"));
            }
            let mut file = graph.download(url, max).await.map_err(|e| {
                tracing::info!(error = %e, "media link: download failed");
                (502, "download failed\n")
            })?;
            if let Some(mime) = info.get("mime_type").and_then(Value::as_str) {
                file.mime = mime.to_owned();
            }
            Ok(file)
        })
    }
}
