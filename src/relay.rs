//! Cluster mode: callbacks taken at whichever instance they reach.
//!
//! A load balancer sends a network's webhook, or a homeserver's appservice transaction, to any
//! instance. For an account whose connector offers a relay (`passerelle_sdk::relay`), the
//! instance that received the call proves it with the relay, then keeps it in the shared store
//! (the `relayed` table, sealed with the outbox key) and answers; the network's retry is then
//! no longer needed. The account's owner hands the kept calls, oldest first, to its running
//! connector and deletes each once handled. Every call is kept this way, at the owner too, so
//! one account's calls reach its connector in the order they were kept.
//!
//! What may come twice: a call handled but not yet deleted when its owner died is handled again
//! by the next owner. The connector's events then carry the same remote ids, which the shared
//! store drops as duplicates (a Matrix transaction's id is remembered too).

use crate::cluster::Cluster;
use crate::store::StoreError;
use crate::store::postgres::PostgresStore;
use crate::store::seal::Sealer;
use axum::body::Bytes;
use axum::http;
use dashmap::DashMap;
use passerelle_sdk::relay::Relay;
use passerelle_sdk::{AccountId, HttpMount};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The most calls kept for one account at a time; past it a call is answered 503 (the network
/// sends it again later).
pub const MAX_WAITING: i64 = 10_000;
/// The largest call kept: the largest body a route takes and its head.
const MAX_FRAME: usize = 16 * 1024 * 1024 + 256 * 1024;
/// How many kept calls are read at once.
const BATCH: i64 = 16;
/// How often an account's kept calls are looked for without a notice.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How soon they are looked for again while the account is ours but its connector not yet up.
const STARTING_POLL: Duration = Duration::from_millis(250);

/// Every account's relay, and where their calls are kept.
pub struct Relays {
    checks: DashMap<AccountId, Arc<dyn Relay>>,
    wakes: DashMap<AccountId, Arc<Notify>>,
    store: PostgresStore,
    sealer: Arc<Sealer>,
    /// This instance's owner id, which tags the notices of the calls it keeps.
    owner: String,
}

impl Relays {
    /// Relays keeping calls in `store`, sealed by `sealer`, announced as `owner`.
    pub fn new(store: PostgresStore, sealer: Arc<Sealer>, owner: String) -> Self {
        Self {
            checks: DashMap::new(),
            wakes: DashMap::new(),
            store,
            sealer,
            owner,
        }
    }

    /// Sets (or, with `None`, removes) `account`'s relay.
    pub fn set(&self, account: &AccountId, relay: Option<Arc<dyn Relay>>) {
        match relay {
            Some(r) => {
                self.checks.insert(account.clone(), r);
            }
            None => {
                self.checks.remove(account);
            }
        }
    }

    /// `account`'s relay, if its connector offers one.
    pub fn get(&self, account: &str) -> Option<Arc<dyn Relay>> {
        self.checks.get(account).map(|r| r.clone())
    }

    /// Keeps a proved call for `account`'s owner. `Ok(false)`: too many wait already.
    pub async fn keep(
        &self,
        account: &AccountId,
        head: &http::request::Parts,
        body: &Bytes,
    ) -> Result<bool, StoreError> {
        let sealed = self.sealer.seal(&encode(head, body));
        let kept = self
            .store
            .relay_keep(account, &self.owner, &sealed, MAX_WAITING)
            .await?;
        if kept {
            crate::metrics::relay_kept(account.as_str());
            self.wake(account);
        }
        Ok(kept)
    }

    /// How many calls wait for each account that has any.
    pub async fn waiting(&self) -> Result<Vec<(AccountId, i64)>, StoreError> {
        self.store.relay_waiting().await
    }

    /// Wakes `account`'s pump (a call was kept for it, or it became ours).
    pub fn wake(&self, account: &AccountId) {
        self.notify(account).notify_one();
    }

    /// A notice on the relay channel: `OWNER\x1fACCOUNT`.
    pub fn on_notice(&self, payload: &str) {
        if let Some((owner, account)) = payload.split_once('\u{1f}')
            && owner != self.owner
        {
            self.wake(&AccountId::new(account));
        }
    }

    fn notify(&self, account: &AccountId) -> Arc<Notify> {
        self.wakes.entry(account.clone()).or_default().clone()
    }
}

/// Hands `account`'s kept calls to its connector while this instance owns the account and the
/// connector serves, oldest first, deleting each once handled. A call the connector could not
/// take now (5xx, 429) stays and is tried again with backoff; one it refuses (another 4xx) or
/// that can't be opened is deleted and counted. Runs until `stop`.
pub async fn pump(
    relays: Arc<Relays>,
    account: AccountId,
    mount: HttpMount,
    cluster: Cluster,
    stop: CancellationToken,
) {
    let wake = relays.notify(&account);
    let mut backoff = Duration::from_millis(500);
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        wait = SWEEP_EVERY;
        if cluster.holds(&account).is_none() {
            continue;
        }
        let Some(handler) = mount.handler() else {
            wait = STARTING_POLL;
            continue;
        };
        match drain(&relays, &account, handler.as_ref()).await {
            Drained::Empty => backoff = Duration::from_millis(500),
            Drained::Later => {
                wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

enum Drained {
    /// Nothing is left.
    Empty,
    /// Something is left that could not be handled now.
    Later,
}

async fn drain(
    relays: &Relays,
    account: &AccountId,
    handler: &dyn passerelle_sdk::HttpHandler,
) -> Drained {
    loop {
        let rows = match relays.store.relay_next(account, 0, BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "cluster: cannot read the kept calls; trying again");
                return Drained::Later;
            }
        };
        if rows.is_empty() {
            return Drained::Empty;
        }
        for (id, sealed) in rows {
            let request = relays.sealer.open(&sealed).ok().and_then(|p| decode(&p));
            let outcome = match request {
                None => {
                    tracing::warn!(account = %account, id, "cluster: a kept call could not be opened (another outbox key?); dropped");
                    "unreadable"
                }
                Some(request) => {
                    let status = handler.handle_relayed(request).await.status().as_u16();
                    if status >= 500 || status == 429 {
                        tracing::info!(account = %account, id, status, "cluster: a kept call was not taken yet; trying again");
                        return Drained::Later;
                    }
                    if (200..300).contains(&status) {
                        "handled"
                    } else {
                        tracing::warn!(account = %account, id, status, "cluster: the connector refused a kept call; dropped");
                        "refused"
                    }
                }
            };
            if let Err(e) = relays.store.relay_done(id).await {
                // Handled again by the next pass; its events are duplicates then.
                tracing::warn!(account = %account, id, error = %e, "cluster: cannot delete a handled call; trying again");
                return Drained::Later;
            }
            crate::metrics::relay_done(account.as_str(), outcome);
        }
    }
}

/// Headers that describe one hop, not the call.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// A call as kept: version 1, then the method, the path with its query, the headers and the
/// body, each length-prefixed (big-endian u32).
fn encode(head: &http::request::Parts, body: &[u8]) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let uri = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let headers: Vec<_> = head
        .headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .collect();
    let mut out = Vec::with_capacity(body.len() + 1024);
    out.push(1);
    put(&mut out, head.method.as_str().as_bytes());
    put(&mut out, uri.as_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        put(&mut out, name.as_str().as_bytes());
        put(&mut out, value.as_bytes());
    }
    put(&mut out, body);
    out
}

/// A kept call back as a request, or `None` when it is not one `encode` made (every length is
/// checked against what is left before anything is taken).
fn decode(frame: &[u8]) -> Option<passerelle_sdk::http::Request> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn u32(&mut self) -> Option<usize> {
            let (n, rest) = self.0.split_first_chunk::<4>()?;
            self.0 = rest;
            Some(u32::from_be_bytes(*n) as usize)
        }
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = self.u32()?;
            if n > self.0.len() {
                return None;
            }
            let (taken, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(taken)
        }
    }
    if frame.len() > MAX_FRAME {
        return None;
    }
    let (&version, rest) = frame.split_first()?;
    if version != 1 {
        return None;
    }
    let mut r = Reader(rest);
    let method = http::Method::from_bytes(r.bytes()?).ok()?;
    let uri: http::Uri = std::str::from_utf8(r.bytes()?).ok()?.parse().ok()?;
    let count = r.u32()?;
    if count > 1024 {
        return None;
    }
    let mut builder = http::Request::builder().method(method).uri(uri);
    for _ in 0..count {
        let name = http::HeaderName::from_bytes(r.bytes()?).ok()?;
        let value = http::HeaderValue::from_bytes(r.bytes()?).ok()?;
        builder = builder.header(name, value);
    }
    let body = Bytes::copy_from_slice(r.bytes()?);
    if !r.0.is_empty() {
        return None;
    }
    builder.body(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: &'static [u8]) -> (http::request::Parts, Bytes) {
        let (parts, ()) = http::Request::builder()
            .method("PUT")
            .uri("/_matrix/app/v1/transactions/42?access_token=x%20y")
            .header("authorization", "Bearer secret")
            .header("x-many", "one")
            .header("x-many", "two")
            .header("connection", "keep-alive")
            .body(())
            .expect("a request")
            .into_parts();
        (parts, Bytes::from_static(body))
    }

    #[test]
    fn a_kept_call_comes_back_as_it_was_less_its_hop_headers() {
        let (head, body) = call(b"{\"events\": []}\x00\xff");
        let back = decode(&encode(&head, &body)).expect("decodes");
        assert_eq!(back.method(), "PUT");
        assert_eq!(
            back.uri().to_string(),
            "/_matrix/app/v1/transactions/42?access_token=x%20y"
        );
        assert_eq!(back.headers()["authorization"], "Bearer secret");
        let many: Vec<_> = back.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["one", "two"]);
        assert!(back.headers().get("connection").is_none());
        assert_eq!(back.body().as_ref(), b"{\"events\": []}\x00\xff");
    }

    #[test]
    fn a_cut_or_padded_or_foreign_frame_is_refused() {
        let (head, body) = call(b"body");
        let frame = encode(&head, &body);
        for cut in 0..frame.len() {
            assert!(decode(&frame[..cut]).is_none(), "cut at {cut}");
        }
        let mut padded = frame.clone();
        padded.push(0);
        assert!(decode(&padded).is_none());
        let mut other = frame.clone();
        other[0] = 2;
        assert!(decode(&other).is_none());
        // A length past the end is refused before anything is taken.
        let mut huge = vec![1u8];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&huge).is_none());
    }
}
