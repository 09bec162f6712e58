//! A fake of Meta's Graph API for the three messaging products, and of Meta's webhook deliveries,
//! written from the public documentation (see this crate's `PROTOCOL.md`):
//!
//! - `POST /{ID}/messages` for a WhatsApp phone number id (Cloud API body and answer), a Page id
//!   (Messenger Send API) or an Instagram account id; fields are checked as the API documents them,
//!   and a free-form message outside the 24-hour window since the person last wrote is refused
//!   with the documented error (WhatsApp 131047; Messenger/Instagram 10/2018278).
//! - `POST /{PHONE_NUMBER_ID}/media` (multipart `file`, `type`, `messaging_product=whatsapp`),
//!   `GET /{MEDIA_ID}` (the media object with a short-lived `url`), and that URL, which needs the
//!   token like the real one.
//! - `GET /{ID}` for the account itself (what a connector checks its token with).
//! - The token goes in `Authorization: Bearer` or `access_token=`; a wrong one is error 190.
//! - Errors use Graph's shape `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`;
//!   [`FakeMeta::fail_next`] queues documented errors (throttling, with or without headers).
//! - Webhooks are delivered as Meta does: JSON, `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of
//!   the raw body keyed with the app secret>`; [`FakeMeta::verify`] makes the subscription GET.
//!
//! Every accepted send is recorded with its exact JSON body for tests to assert.

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The Graph API version the fake serves under.
pub const VERSION: &str = "v23.0";

/// Which product an id of the fake belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// A WhatsApp business phone number id.
    WhatsApp,
    /// A Facebook Page id.
    Messenger,
    /// An Instagram professional account id.
    Instagram,
}

impl Product {
    fn object(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp_business_account",
            Self::Messenger => "page",
            Self::Instagram => "instagram",
        }
    }
}

/// A send the fake accepted.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The business id it was sent from (path).
    pub from: String,
    /// The exact JSON body.
    pub body: Value,
    /// The message id the fake answered with.
    pub id: String,
}

/// A file uploaded to `/media`.
#[derive(Clone, Debug)]
pub struct Upload {
    /// The bytes.
    pub data: Vec<u8>,
    /// The `type` field (MIME).
    pub mime: String,
    /// The part's file name.
    pub file_name: Option<String>,
}

struct QueuedError {
    status: u16,
    code: i64,
    subcode: Option<i64>,
    message: String,
    headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    products: HashMap<String, Product>,
    /// Messenger and Instagram people's profiles, by their scoped id.
    people: HashMap<String, Value>,
    sent: Vec<Sent>,
    media: HashMap<String, Upload>,
    /// When each (business id, person) last wrote, ms since the epoch.
    last_inbound: HashMap<(String, String), u64>,
    fail: VecDeque<QueuedError>,
    counter: u64,
    calls: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    token: String,
    port: u16,
}

/// The fake, serving on `127.0.0.1:port` until dropped.
pub struct FakeMeta {
    /// Its port.
    pub port: u16,
    shared: Shared,
    app_secret: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for FakeMeta {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn graph_error(e: &QueuedError, trace: u64) -> Response {
    let mut error = json!({
        "message": e.message,
        "type": "OAuthException",
        "code": e.code,
        "fbtrace_id": format!("A{trace:010}xYz"),
    });
    if let Some(sub) = e.subcode {
        error["error_subcode"] = json!(sub);
    }
    let mut response = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({ "error": error })),
    )
        .into_response();
    for (k, v) in &e.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

fn error(status: u16, code: i64, subcode: Option<i64>, message: &str) -> QueuedError {
    QueuedError {
        status,
        code,
        subcode,
        message: message.to_owned(),
        headers: Vec::new(),
    }
}

impl Shared {
    /// Checks the token (header or query) and pops a queued failure; the error to answer with.
    fn gate(&self, headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Response> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = bearer.or(query.get("access_token").map(String::as_str));
        let mut inner = self.inner.lock().ok()?;
        inner.calls += 1;
        let trace = inner.calls;
        if token != Some(self.token.as_str()) {
            let e = error(
                401,
                190,
                None,
                "Invalid OAuth access token - Cannot parse access token",
            );
            return Some(graph_error(&e, trace));
        }
        inner.fail.pop_front().map(|e| graph_error(&e, trace))
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut inner = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        inner.counter += 1;
        format!("{prefix}{:016X}", inner.counter * 7919 + 1_000_003)
    }
}

const WINDOW_MS: u64 = 24 * 3600 * 1000;

fn refuse(status: u16, code: i64, subcode: Option<i64>, message: &str) -> Response {
    graph_error(&error(status, code, subcode, message), 0)
}

async fn send(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(e) = s.gate(&headers, &query) {
        return e;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return refuse(
            400,
            100,
            None,
            "(#100) The parameter messaging_product is required.",
        );
    };
    let product = s
        .inner
        .lock()
        .ok()
        .and_then(|i| i.products.get(&id).copied());
    let Some(product) = product else {
        return refuse(400, 100, Some(33), "Unsupported post request.");
    };
    let now = now_ms();
    let last = |person: &str| {
        s.inner.lock().ok().and_then(|i| {
            i.last_inbound
                .get(&(id.clone(), person.to_owned()))
                .copied()
        })
    };
    let answer = match product {
        Product::WhatsApp => {
            if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
                return refuse(
                    400,
                    100,
                    None,
                    "(#100) The parameter messaging_product is required.",
                );
            }
            let Some(to) = body.get("to").and_then(Value::as_str) else {
                return refuse(400, 100, None, "(#100) The parameter to is required.");
            };
            let kind = body.get("type").and_then(Value::as_str).unwrap_or("text");
            let Some(obj) = body.get(kind) else {
                return refuse(
                    400,
                    100,
                    None,
                    "(#100) Param is required for the message type.",
                );
            };
            match kind {
                "text" => {
                    let text = obj.get("body").and_then(Value::as_str).unwrap_or("");
                    if text.is_empty() || text.chars().count() > 4096 {
                        return refuse(400, 100, None, "(#100) Invalid parameter: text.body");
                    }
                }
                "image" | "video" | "audio" | "document" | "sticker" => {
                    let by_id = obj.get("id").and_then(Value::as_str);
                    let known = by_id
                        .is_some_and(|m| s.inner.lock().is_ok_and(|i| i.media.contains_key(m)));
                    if !(known || obj.get("link").and_then(Value::as_str).is_some()) {
                        return refuse(400, 131053, None, "(#131053) Media upload error");
                    }
                }
                "reaction" => {
                    if obj.get("message_id").and_then(Value::as_str).is_none()
                        || obj.get("emoji").and_then(Value::as_str).is_none()
                    {
                        return refuse(400, 100, None, "(#100) Invalid parameter: reaction");
                    }
                }
                "template" => {}
                _ => return refuse(400, 100, None, "(#100) Invalid parameter: type"),
            }
            if kind != "template" && last(to).is_none_or(|t| now.saturating_sub(t) > WINDOW_MS) {
                return refuse(
                    400,
                    131047,
                    None,
                    "(#131047) Re-engagement message: more than 24 hours have passed since the recipient last replied to the sender number.",
                );
            }
            let wamid = s.next_id("wamid.HBgL");
            json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            })
        }
        Product::Messenger | Product::Instagram => {
            let Some(to) = body
                .get("recipient")
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
            else {
                return refuse(400, 100, None, "(#100) param recipient must be non-empty.");
            };
            if product == Product::Messenger {
                match body.get("messaging_type").and_then(Value::as_str) {
                    Some("RESPONSE" | "UPDATE") => {}
                    Some("MESSAGE_TAG") if body.get("tag").is_some() => {}
                    _ => return refuse(400, 100, None, "(#100) messaging_type is required."),
                }
            }
            let Some(message) = body.get("message") else {
                return refuse(400, 100, None, "(#100) param message must be non-empty.");
            };
            if let Some(text) = message.get("text").and_then(Value::as_str) {
                let too_long = match product {
                    Product::Messenger => text.chars().count() > 2000,
                    _ => text.len() > 1000,
                };
                if text.is_empty() || too_long {
                    return refuse(
                        400,
                        100,
                        None,
                        "(#100) Length of param message[text] must be less than or equal to the limit.",
                    );
                }
            } else if message
                .get("attachment")
                .and_then(|a| a.get("payload"))
                .and_then(|p| p.get("url"))
                .and_then(Value::as_str)
                .is_none()
            {
                return refuse(
                    400,
                    100,
                    None,
                    "(#100) param message must have text or attachment.",
                );
            }
            let tagged = body.get("messaging_type").and_then(Value::as_str) == Some("MESSAGE_TAG");
            if !tagged && last(to).is_none_or(|t| now.saturating_sub(t) > WINDOW_MS) {
                return refuse(
                    400,
                    10,
                    Some(2018278),
                    "(#10) This message is sent outside of allowed window.",
                );
            }
            let mid = s.next_id("m_");
            json!({"recipient_id": to, "message_id": mid})
        }
    };
    let sent_id = answer
        .pointer("/messages/0/id")
        .or_else(|| answer.get("message_id"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Ok(mut inner) = s.inner.lock() {
        inner.sent.push(Sent {
            from: id,
            body,
            id: sent_id,
        });
    }
    axum::Json(answer).into_response()
}

async fn upload(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    if let Some(e) = s.gate(&headers, &query) {
        return e;
    }
    let product = s
        .inner
        .lock()
        .ok()
        .and_then(|i| i.products.get(&id).copied());
    if product != Some(Product::WhatsApp) {
        return refuse(400, 100, Some(33), "Unsupported post request.");
    }
    let (mut file, mut mime, mut product_field, mut file_name) = (None, None, None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("file") => {
                file_name = field.file_name().map(str::to_owned);
                file = field.bytes().await.ok().map(|b| b.to_vec());
            }
            Some("type") => mime = field.text().await.ok(),
            Some("messaging_product") => product_field = field.text().await.ok(),
            _ => {}
        }
    }
    let (Some(data), Some(mime), Some("whatsapp")) = (file, mime, product_field.as_deref()) else {
        return refuse(
            400,
            100,
            None,
            "(#100) file, type and messaging_product are required.",
        );
    };
    let media_id = s
        .next_id("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    if let Ok(mut inner) = s.inner.lock() {
        inner.media.insert(
            media_id.clone(),
            Upload {
                data,
                mime,
                file_name,
            },
        );
    }
    axum::Json(json!({"id": media_id})).into_response()
}

async fn node(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = s.gate(&headers, &query) {
        return e;
    }
    let inner = match s.inner.lock() {
        Ok(i) => i,
        Err(p) => p.into_inner(),
    };
    if let Some(m) = inner.media.get(&id) {
        return axum::Json(json!({
            "messaging_product": "whatsapp",
            "url": format!("http://127.0.0.1:{}/whatsapp_business/attachments/?mid={id}", s.port),
            "mime_type": m.mime,
            "sha256": "",
            "file_size": m.data.len(),
            "id": id,
        }))
        .into_response();
    }
    if inner.products.contains_key(&id) {
        return axum::Json(json!({"id": id})).into_response();
    }
    if let Some(profile) = inner.people.get(&id) {
        return axum::Json(profile.clone()).into_response();
    }
    refuse(
        400,
        100,
        Some(33),
        "Unsupported get request. Object does not exist.",
    )
}

async fn download(
    State(s): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = s.gate(&headers, &HashMap::new()) {
        return e;
    }
    let file = query
        .get("mid")
        .and_then(|m| s.inner.lock().ok()?.media.get(m).cloned());
    match file {
        Some(f) => ([("content-type", f.mime)], f.data).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl FakeMeta {
    /// Starts the fake; `token` is the only access token it accepts, `app_secret` signs webhooks.
    pub async fn start(token: &str, app_secret: &str) -> Self {
        let (listener, port) = passerelle_testkit::loopback::listen().await;
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
            token: token.to_owned(),
            port,
        };
        let app = axum::Router::new()
            .route(&format!("/{VERSION}/{{id}}/messages"), post(send))
            .route(&format!("/{VERSION}/{{id}}/media"), post(upload))
            .route(&format!("/{VERSION}/{{id}}"), get(node))
            .route("/whatsapp_business/attachments/", get(download))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        passerelle_testkit::loopback::serve(listener, app, stop.clone());
        Self {
            port,
            shared,
            app_secret: app_secret.to_owned(),
            // A new connection for each delivery: a server that refused a body before reading
            // it (413) closes the connection, and a pooled one would fail the next delivery.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default(),
            stop,
        }
    }

    /// The `api_base` a connector is configured with.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/{VERSION}", self.port)
    }

    /// Declares a business id of `product`.
    pub fn add(&self, product: Product, id: &str) {
        if let Ok(mut i) = self.shared.inner.lock() {
            i.products.insert(id.to_owned(), product);
        }
    }

    /// A Messenger person (`first_name`, `last_name`) or Instagram person (`name`, `username`)
    /// whose profile `GET /{id}` answers, as the User Profile APIs do.
    pub fn add_person(&self, id: &str, profile: Value) {
        let mut profile = profile;
        profile["id"] = json!(id);
        if let Ok(mut i) = self.shared.inner.lock() {
            i.people.insert(id.to_owned(), profile);
        }
    }

    /// Every send accepted so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared
            .inner
            .lock()
            .map(|i| i.sent.clone())
            .unwrap_or_default()
    }

    /// A file uploaded to `/media` (or added with [`FakeMeta::add_media`]).
    pub fn media(&self, id: &str) -> Option<Upload> {
        self.shared.inner.lock().ok()?.media.get(id).cloned()
    }

    /// A file a person sent, as WhatsApp keeps it; its media id.
    pub fn add_media(&self, data: &[u8], mime: &str) -> String {
        let id = self
            .shared
            .next_id("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>();
        if let Ok(mut i) = self.shared.inner.lock() {
            i.media.insert(
                id.clone(),
                Upload {
                    data: data.to_vec(),
                    mime: mime.to_owned(),
                    file_name: None,
                },
            );
        }
        id
    }

    /// Makes the 24-hour window with `person` look `age_ms` old (or closed, with `None`).
    pub fn set_last_inbound(&self, business: &str, person: &str, age_ms: Option<u64>) {
        if let Ok(mut i) = self.shared.inner.lock() {
            let key = (business.to_owned(), person.to_owned());
            match age_ms {
                Some(age) => i.last_inbound.insert(key, now_ms().saturating_sub(age)),
                None => i.last_inbound.remove(&key),
            };
        }
    }

    /// Makes the next API call fail with Graph error `code`/`subcode` and HTTP `status`, with
    /// extra response `headers` (e.g. `Retry-After`, `X-Business-Use-Case-Usage`).
    pub fn fail_next(
        &self,
        status: u16,
        code: i64,
        subcode: Option<i64>,
        message: &str,
        headers: &[(&str, &str)],
    ) {
        if let Ok(mut i) = self.shared.inner.lock() {
            i.fail.push_back(QueuedError {
                status,
                code,
                subcode,
                message: message.to_owned(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            });
        }
    }

    /// The signature header value Meta would send for `body`.
    pub fn signature(&self, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.app_secret.as_bytes())
            .expect("HMAC takes any key");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    /// POSTs `body` to `url` as Meta does, signed unless `signature` overrides it (`Some(None)`:
    /// no header). Returns the HTTP status.
    pub async fn post_raw(&self, url: &str, body: &[u8], signature: Option<Option<&str>>) -> u16 {
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        match signature {
            None => req = req.header("x-hub-signature-256", self.signature(body)),
            Some(Some(sig)) => req = req.header("x-hub-signature-256", sig),
            Some(None) => {}
        }
        match req.send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Delivers a webhook body as Meta does, noting that the people who wrote in it opened their
    /// 24-hour window. Returns the HTTP status.
    pub async fn deliver(&self, url: &str, body: &Value) -> u16 {
        let bytes = body.to_string().into_bytes();
        let status = self.post_raw(url, &bytes, None).await;
        if status == 200 {
            self.note_writers(body);
        }
        status
    }

    fn note_writers(&self, body: &Value) {
        let now = now_ms();
        let Ok(mut inner) = self.shared.inner.lock() else {
            return;
        };
        for entry in body
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for change in entry
                .get("changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let value = &change["value"];
                let phone = value["metadata"]["phone_number_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                for m in value["messages"].as_array().into_iter().flatten() {
                    if let Some(from) = m["from"].as_str() {
                        inner
                            .last_inbound
                            .insert((phone.clone(), from.to_owned()), now);
                    }
                }
            }
            let business = entry["id"].as_str().unwrap_or("").to_owned();
            for m in entry["messaging"].as_array().into_iter().flatten() {
                if m.get("message").is_some()
                    && m["message"]["is_echo"] != json!(true)
                    && let Some(from) = m["sender"]["id"].as_str()
                {
                    inner
                        .last_inbound
                        .insert((business.clone(), from.to_owned()), now);
                }
            }
        }
    }

    /// Meta's subscription check: `GET url?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`.
    /// Returns the status and body.
    pub async fn verify(&self, url: &str, verify_token: &str, challenge: &str) -> (u16, String) {
        let enc = |v: &str| -> String {
            v.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let url = format!(
            "{url}?hub.mode=subscribe&hub.challenge={}&hub.verify_token={}",
            enc(challenge),
            enc(verify_token)
        );
        let r = self.http.get(url).send().await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// A fresh WhatsApp message id, as the webhook carries them.
    pub fn wamid(&self) -> String {
        self.shared.next_id("wamid.HBgM")
    }

    /// A fresh Messenger/Instagram message id.
    pub fn mid(&self) -> String {
        self.shared.next_id("m_")
    }
}

/// A WhatsApp webhook body for `phone_number_id` whose change `value` holds `fields`
/// (`contacts`, `messages`, `statuses`…) beside the product and metadata.
fn whatsapp_change(phone_number_id: &str, fields: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    });
    if let (Some(v), Some(f)) = (value.as_object_mut(), fields.as_object()) {
        v.extend(f.clone());
    }
    json!({
        "object": Product::WhatsApp.object(),
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]
    })
}

/// A WhatsApp `messages` webhook body for `phone_number_id` carrying `messages` (each a Cloud
/// API message object) from people named in `contacts` (`(wa_id, name)`).
pub fn whatsapp_body(
    phone_number_id: &str,
    contacts: &[(&str, &str)],
    messages: Vec<Value>,
) -> Value {
    let contacts: Vec<Value> = contacts
        .iter()
        .map(|(id, name)| json!({"profile": {"name": name}, "wa_id": id}))
        .collect();
    whatsapp_change(
        phone_number_id,
        json!({"contacts": contacts, "messages": messages}),
    )
}

/// A WhatsApp `statuses` webhook body.
pub fn whatsapp_statuses(phone_number_id: &str, statuses: Vec<Value>) -> Value {
    whatsapp_change(phone_number_id, json!({"statuses": statuses}))
}

/// A WhatsApp text message object.
pub fn whatsapp_text(from: &str, id: &str, text: &str) -> Value {
    json!({
        "from": from, "id": id, "timestamp": (now_ms() / 1000).to_string(),
        "type": "text", "text": {"body": text},
    })
}

/// A Messenger (`object: page`) or Instagram (`object: instagram`) webhook body for the business
/// id `to`, carrying `messaging` items.
pub fn messaging_body(product: Product, to: &str, messaging: Vec<Value>) -> Value {
    json!({
        "object": product.object(),
        "entry": [{"id": to, "time": now_ms(), "messaging": messaging}],
    })
}

/// A Messenger/Instagram text message item from `from` to `to`.
pub fn messaging_text(from: &str, to: &str, mid: &str, text: &str) -> Value {
    json!({
        "sender": {"id": from}, "recipient": {"id": to}, "timestamp": now_ms(),
        "message": {"mid": mid, "text": text},
    })
}
