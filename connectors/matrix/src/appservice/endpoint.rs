//! The Application Service API the homeserver calls: transactions (acknowledged once every event
//! is stored, a retried one answered without bridging it again), user queries and ping.

use super::*;

/// A transaction's body as far as it is parsed at once: its events stay raw.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    events: Vec<Box<serde_json::value::RawValue>>,
}

pub(super) struct Endpoint(pub(super) Arc<Shared>);

/// The largest transaction the homeserver may send (Synapse sends at most 100 events and 100
/// ephemeral ones, each at most 64 KiB).
const MAX_TRANSACTION: usize = 16 * 1024 * 1024;

impl HttpHandler for Endpoint {
    /// File links are for anyone holding one (their signature is the check, once the path is
    /// read); everything else needs the homeserver's `hs_token`, checked before the body is read.
    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        if head.uri.path().starts_with("/media/") && self.0.links.public() {
            return media::admit(head);
        }
        admission(self.0.authorized(&head.headers, &head.uri), &head.method)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let shared = self.0.clone();
        Box::pin(async move { shared.handle(request).await })
    }
}

/// The homeserver's transactions at any instance of a cluster (see `passerelle_sdk::relay`):
/// proved by `hs_token` as the running connector proves them and kept for the account's owner,
/// which bridges them in the order they came; pings are answered at once. User and alias
/// queries need the running connector and are not relayed.
pub struct Relay {
    hs_token: passerelle_sdk::Secret,
}

impl Relay {
    /// The relay of an appservice account.
    pub fn new(asv: &crate::config::AppserviceSettings) -> Self {
        Self {
            hs_token: asv.hs_token.clone(),
        }
    }

    fn authorized(&self, head: &http::request::Parts) -> Option<bool> {
        token_of(&head.headers, &head.uri).map(|t| self.hs_token.matches(&t))
    }
}

/// Whether `path` is a transaction (`Some(true)`), a ping (`Some(false)`) or neither.
fn relayed_call(method: &http::Method, path: &str) -> Option<bool> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("PUT", ["_matrix", "app", "v1", "transactions", _]) => Some(true),
        ("POST", ["_matrix", "app", "v1", "ping"]) => Some(false),
        _ => None,
    }
}

impl passerelle_sdk::relay::Relay for Relay {
    fn relays(&self, head: &http::request::Parts) -> bool {
        relayed_call(&head.method, head.uri.path()).is_some()
    }

    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        admission(self.authorized(head), &head.method)
    }

    /// A transaction is kept when its envelope parses (its events are read by the owner, each
    /// on its own); anything else the homeserver would be sent again for ever is refused 400.
    fn check(&self, request: &Request) -> passerelle_sdk::relay::Relaying {
        use passerelle_sdk::relay::Relaying;
        match token_of(request.headers(), request.uri()).map(|t| self.hs_token.matches(&t)) {
            None => return Relaying::Answer(matrix_error(401, "M_UNAUTHORIZED", "missing token")),
            Some(false) => return Relaying::Answer(matrix_error(403, "M_FORBIDDEN", "bad token")),
            Some(true) => {}
        }
        match relayed_call(request.method(), request.uri().path()) {
            Some(true) => {
                if serde_json::from_slice::<Envelope>(request.body()).is_err() {
                    warn!(
                        bytes = request.body().len(),
                        "malformed transaction refused"
                    );
                    return Relaying::Answer(matrix_error(400, "M_NOT_JSON", "body is not JSON"));
                }
                Relaying::Keep(json_response(200, &json!({})))
            }
            Some(false) => Relaying::Answer(json_response(200, &json!({}))),
            None => Relaying::Answer(matrix_error(404, "M_UNRECOGNIZED", "unknown endpoint")),
        }
    }
}

/// The token of an appservice call: `Authorization: Bearer`, else the older `access_token`
/// query parameter.
fn token_of(headers: &http::HeaderMap, uri: &http::Uri) -> Option<String> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .and_then(dec)
    });
    header.map(str::to_owned).or(query)
}

/// What a call's head earns from its token check (`None`: no token): 401, 403, or its body
/// read, a transaction's up to the largest the homeserver sends.
fn admission(authorized: Option<bool>, method: &http::Method) -> passerelle_sdk::Admission {
    use passerelle_sdk::Admission;
    match authorized {
        None => Admission::Answer(matrix_error(401, "M_UNAUTHORIZED", "missing token")),
        Some(false) => {
            warn!("appservice request with a wrong hs_token refused");
            Admission::Answer(matrix_error(403, "M_FORBIDDEN", "bad token"))
        }
        Some(true) if *method == http::Method::PUT => Admission::read(MAX_TRANSACTION),
        // Queries and pings: small bodies, if any.
        Some(true) => Admission::read(64 * 1024),
    }
}

pub(super) fn matrix_error(status: u16, errcode: &str, error: &str) -> Response {
    json_response(status, &json!({"errcode": errcode, "error": error}))
}

impl Shared {
    pub(super) fn authorized(&self, headers: &http::HeaderMap, uri: &http::Uri) -> Option<bool> {
        token_of(headers, uri).map(|t| self.hs_token.matches(&t))
    }

    pub(super) async fn handle(&self, request: Request) -> Response {
        // File links are opened by anyone who has one; their signature is the check.
        if request.uri().path().starts_with("/media/") && self.links.public() {
            let path = request.uri().path().to_owned();
            return media::serve(
                &self.links,
                &path,
                &self.hs.base,
                self.hs.token.expose(),
                Some(&self.names.bot),
                self.max_upload,
            )
            .await
            .unwrap_or_else(|| matrix_error(404, "M_NOT_FOUND", "no such file"));
        }
        // Checked again here (admit already did): a handler is never called unchecked.
        match self.authorized(request.headers(), request.uri()) {
            None => return matrix_error(401, "M_UNAUTHORIZED", "missing token"),
            Some(false) => {
                warn!("appservice request with a wrong hs_token refused");
                return matrix_error(403, "M_FORBIDDEN", "bad token");
            }
            Some(true) => {}
        }
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("PUT", ["_matrix", "app", "v1", "transactions", txn]) => {
                let txn = dec(txn).unwrap_or_default();
                self.transaction(&txn, request.body()).await
            }
            ("GET", ["_matrix", "app", "v1", "users", user]) => {
                let user = dec(user).unwrap_or_default();
                self.user_query(&user).await
            }
            ("GET", ["_matrix", "app", "v1", "rooms", alias]) => {
                let alias = dec(alias).unwrap_or_default();
                self.alias_query(&alias).await
            }
            ("POST", ["_matrix", "app", "v1", "ping"]) => json_response(200, &json!({})),
            _ => matrix_error(404, "M_UNRECOGNIZED", "unknown endpoint"),
        }
    }

    pub(super) async fn user_query(&self, user: &str) -> Response {
        if !self.names.is_ours(user) || user == self.names.sender {
            return matrix_error(404, "M_NOT_FOUND", "not ours");
        }
        let Some(local) = ghost::local_of(user, &self.names.server) else {
            return matrix_error(404, "M_NOT_FOUND", "not ours");
        };
        match register(&self.hs, local).await {
            Ok(()) => json_response(200, &json!({})),
            Err(_) => matrix_error(500, "M_UNKNOWN", "could not create the user"),
        }
    }

    pub(super) async fn transaction(&self, txn: &str, body: &[u8]) -> Response {
        let _one_at_a_time = self.txn_lock.lock().await;
        let last = self
            .state
            .get(LAST_TXN)
            .await
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        if last.as_deref() == Some(txn) {
            debug!(txn, "transaction seen before; acknowledged again");
            return json_response(200, &json!({}));
        }
        // Only the envelope is parsed here; each event is read on its own, so that one event
        // that can't be read (nested past the parser's depth limit, say) is skipped instead of
        // refusing the transaction, which the homeserver would send again for ever with every
        // later one queued behind it. Skipping a raw event costs no recursion at any depth.
        let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
            warn!(txn, bytes = body.len(), "malformed transaction refused");
            return matrix_error(400, "M_NOT_JSON", "body is not JSON");
        };
        let events = envelope.events;
        for raw in &events {
            let Ok(ev) = serde_json::from_str::<Value>(raw.get()) else {
                passerelle_sdk::drops::inbound(self.emitter.account(), "matrix_event_unreadable");
                warn!(
                    txn,
                    bytes = raw.get().len(),
                    "an event of the transaction could not be read; skipped"
                );
                continue;
            };
            if let Err(e) = self.event(&ev).await {
                // Not acknowledged: the homeserver sends the transaction again later.
                warn!(txn, error = %e, "transaction not stored; the homeserver will retry");
                return matrix_error(503, "M_UNKNOWN", "try again");
            }
        }
        if let Err(e) = self.state.put(LAST_TXN, txn.as_bytes().to_vec()).await {
            warn!(txn, error = %e, "could not remember the transaction id");
        }
        debug!(txn, events = events.len(), "transaction stored");
        json_response(200, &json!({}))
    }

    pub(super) async fn event(&self, ev: &Value) -> Result<(), passerelle_sdk::EmitError> {
        let sender = ev["sender"].as_str().unwrap_or_default();
        let room_id = ev["room_id"].as_str().unwrap_or_default();
        if ev["type"] == "m.room.member"
            && let Some(subject) = ev["state_key"].as_str()
        {
            // Keep the name cache fresh.
            let name = ev["content"]["displayname"].as_str().map(str::to_owned);
            self.names_cache
                .lock()
                .await
                .insert((room_id.to_owned(), subject.to_owned()), name);
            if ev["content"]["membership"] == "knock" && subject == sender {
                self.knocked(room_id, subject).await;
            }
            if subject == self.names.bot && ev["content"]["membership"] == "invite" {
                let linked = self.linked_name(room_id).is_some();
                if linked || self.admins.iter().any(|a| a == sender) {
                    let path = format!("/_matrix/client/v3/join/{}", enc(room_id));
                    match self.as_bot(&path, json!({})).await {
                        Ok(_) => info!(room = room_id, "joined on invite"),
                        Err(e) => warn!(
                            room = room_id,
                            status = e.status,
                            "could not join on invite"
                        ),
                    }
                }
            }
        }
        if self.names.is_ours(sender) {
            return Ok(());
        }
        let Some(room) = self.linked_name(room_id) else {
            if ev["type"] == "m.room.message" && self.admins.iter().any(|a| a == sender) {
                self.admin_command(room_id, sender, ev).await;
            }
            return Ok(());
        };
        let display = self.display_name(room_id, sender).await;
        match translate::inbound(ev, &room, display, &self.links) {
            Inbound::Event(event) => {
                let kind = event.kind.name();
                let d = self.emitter.emit(*event).await?;
                debug!(room = room_id, kind, disposition = ?d, "emitted");
            }
            Inbound::Skip(why) => debug!(room = room_id, why, "not bridged"),
        }
        Ok(())
    }

    /// The configured (or portal) name of a Matrix room, when it is linked.
    pub(super) fn linked_name(&self, room_id: &str) -> Option<RoomId> {
        self.rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
            .cloned()
    }

    /// The Matrix room id of a configured (or portal) name.
    pub(super) fn room_id(&self, name: &RoomId) -> Option<String> {
        self.ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// POSTs `body` to `path` as the bot.
    pub(super) async fn as_bot(&self, path: &str, body: Value) -> Result<Value, HsError> {
        self.hs
            .call(
                reqwest::Method::POST,
                path,
                Some(&self.names.bot),
                Some(&body),
            )
            .await
    }

    pub(super) async fn display_name(&self, room: &str, user: &str) -> Option<String> {
        let key = (room.to_owned(), user.to_owned());
        if let Some(name) = self.names_cache.lock().await.get(&key) {
            return name.clone();
        }
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        );
        let name = self
            .hs
            .call(reqwest::Method::GET, &path, Some(&self.names.bot), None)
            .await
            .ok()
            .and_then(|v| v["displayname"].as_str().map(str::to_owned));
        self.names_cache.lock().await.insert(key, name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_sdk::relay::{Relay as _, Relaying};

    fn relay() -> Relay {
        Relay {
            hs_token: passerelle_sdk::Secret::new("b".repeat(32)),
        }
    }

    fn call(method: &str, path: &str, token: Option<&str>, body: &str) -> Request {
        let mut b = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(bytes::Bytes::from(body.to_owned())).unwrap()
    }

    fn outcome(r: Relaying) -> (&'static str, u16) {
        match r {
            Relaying::Keep(a) => ("keep", a.status().as_u16()),
            Relaying::Answer(a) => ("answer", a.status().as_u16()),
        }
    }

    #[test]
    fn transactions_are_kept_with_the_right_token_only_and_queries_stay_with_the_owner() {
        let r = relay();
        let good = "b".repeat(32);
        let txn = "/_matrix/app/v1/transactions/1700000000001";
        let body = r#"{"events":[{"type":"m.room.message"}]}"#;
        assert_eq!(
            outcome(r.check(&call("PUT", txn, Some(&good), body))),
            ("keep", 200)
        );
        assert_eq!(
            outcome(r.check(&call("PUT", txn, Some("guess"), body))),
            ("answer", 403)
        );
        assert_eq!(
            outcome(r.check(&call("PUT", txn, None, body))),
            ("answer", 401)
        );
        // The older query parameter works as the header does.
        let query = format!("{txn}?access_token={good}");
        assert_eq!(
            outcome(r.check(&call("PUT", &query, None, body))),
            ("keep", 200)
        );
        assert_eq!(
            outcome(r.check(&call("PUT", txn, Some(&good), "{\"events\":"))),
            ("answer", 400)
        );
        let ping = call("POST", "/_matrix/app/v1/ping", Some(&good), "{}");
        assert_eq!(outcome(r.check(&ping)), ("answer", 200));
        for (method, path) in [
            ("GET", "/_matrix/app/v1/users/%40passerelle_x%3Aexample.org"),
            ("GET", "/_matrix/app/v1/rooms/%23passerelle_x%3Aexample.org"),
            ("GET", "/media/abc/def"),
        ] {
            let head = call(method, path, Some(&good), "").into_parts().0;
            assert!(!r.relays(&head), "{path} is not relayed");
        }
        let head = call("PUT", txn, Some("guess"), "").into_parts().0;
        assert!(matches!(
            r.admit(&head),
            passerelle_sdk::Admission::Answer(_)
        ));
    }
}
