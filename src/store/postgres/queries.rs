//! The queries of the PostgreSQL store: the [`Store`] trait over the pool, and the ordering and
//! announcing every queueing transaction does.

use super::*;

fn key_from(bytes: Vec<u8>) -> Result<EventKey, StoreError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Database("malformed event key in store".into()))?;
    Ok(EventKey::from_bytes(array))
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn from_ms(v: i64) -> Timestamp {
    Timestamp(v.max(0) as u64)
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// The lock key of one destination room: the first 8 bytes of SHA-256 over account and room.
pub(super) fn room_lock(account: &AccountId, room: &RoomId) -> i64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(account.as_str().as_bytes());
    hash.update([0u8]);
    hash.update(room.as_str().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

impl PostgresStore {
    /// Announces the destinations of `deliveries` on [`OUTBOX_CHANNEL`] when the transaction
    /// commits (cluster mode only).
    async fn announce<'a>(
        &self,
        tx: &Transaction<'_>,
        deliveries: impl Iterator<Item = &'a NewDelivery>,
    ) -> Result<(), StoreError> {
        let Some(owner) = self.notify_as.get() else {
            return Ok(());
        };
        let mut notices: Vec<String> = deliveries
            .filter_map(|d| {
                // PostgreSQL takes notices under 8,000 bytes; without one, the owner's sweep
                // finds the row within seconds.
                let notice = format!("{owner}\u{1f}{}\u{1f}{}", d.account, d.room);
                let short = format!("{owner}\u{1f}{}\u{1f}", d.account);
                [notice, short].into_iter().find(|n| n.len() < 7_900)
            })
            .collect();
        notices.sort_unstable();
        notices.dedup();
        if notices.is_empty() {
            return Ok(());
        }
        let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        for notice in &notices {
            tx.execute(&stmt, &[&OUTBOX_CHANNEL, notice]).await?;
        }
        Ok(())
    }
}

/// Takes the room locks of every destination in `deliveries`, in ascending order.
async fn lock_rooms<'a>(
    tx: &Transaction<'_>,
    deliveries: impl Iterator<Item = &'a NewDelivery>,
) -> Result<(), StoreError> {
    let mut locks: Vec<i64> = deliveries.map(|d| room_lock(&d.account, &d.room)).collect();
    locks.sort_unstable();
    locks.dedup();
    if locks.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    for lock in locks {
        tx.execute(&stmt, &[&lock]).await?;
    }
    Ok(())
}

fn info_from(row: &tokio_postgres::Row) -> Result<EventInfo, StoreError> {
    Ok(EventInfo {
        key: key_from(row.try_get(0)?)?,
        account: AccountId::new(row.try_get::<_, String>(1)?),
        sender_name: row.try_get(2)?,
        thread_root: row
            .try_get::<_, Option<Vec<u8>>>(3)?
            .map(key_from)
            .transpose()?,
        sender_id: row.try_get(4)?,
    })
}

/// Records one event and queues its deliveries inside `tx` (whose room locks are taken),
/// unless its remote id is mapped already.
async fn accept_in(
    tx: &Transaction<'_>,
    event: &NewEvent,
    deliveries: &[NewDelivery],
) -> Result<Accepted, StoreError> {
    let now = ms(event.at);
    let key = event.key.to_bytes().to_vec();
    if let Some(remote) = &event.remote_id {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO remote_ids (account, room, remote_id, key, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .await?;
        let inserted = tx
            .execute(
                &stmt,
                &[
                    &event.account.as_str(),
                    &event.room.as_str(),
                    &remote.as_str(),
                    &key,
                    &now,
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(Accepted::Duplicate);
        }
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (key, account, room, sender_name, sender_id, thread_root, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    let root = event.thread_root.map(|k| k.to_bytes().to_vec());
    tx.execute(
        &stmt,
        &[
            &key,
            &event.account.as_str(),
            &event.room.as_str(),
            &event.sender_name,
            &event.sender_id,
            &root,
            &now,
        ],
    )
    .await?;
    let mut ids = Vec::with_capacity(deliveries.len());
    if deliveries.is_empty() {
        return Ok(Accepted::Stored(ids));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (key, account, room, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .await?;
    for d in deliveries {
        let row = tx
            .query_one(
                &stmt,
                &[
                    &key,
                    &d.account.as_str(),
                    &d.room.as_str(),
                    &d.payload,
                    &now,
                ],
            )
            .await?;
        ids.push(row.try_get(0)?);
    }
    Ok(Accepted::Stored(ids))
}

/// Deletes one outbox row and maps the destination's id, inside `tx`.
async fn complete_in(
    tx: &Transaction<'_>,
    outbox_id: i64,
    delivered: Option<&(EventKey, AccountId, RoomId, RemoteMessageId)>,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("DELETE FROM outbox WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&outbox_id]).await?;
    if let Some((key, account, room, remote)) = delivered {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO remote_ids (account, room, remote_id, key, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, room, remote_id) \
                 DO UPDATE SET key = EXCLUDED.key, created_at = EXCLUDED.created_at",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &account.as_str(),
                &room.as_str(),
                &remote.as_str(),
                &key.to_bytes().to_vec(),
                &ms(Timestamp::now()),
            ],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn accept(
        &self,
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Accepted, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_rooms(&tx, deliveries.iter()).await?;
        let accepted = accept_in(&tx, &event, &deliveries).await?;
        self.announce(&tx, deliveries.iter()).await?;
        tx.commit().await?;
        Ok(accepted)
    }

    async fn accept_many(
        &self,
        events: Vec<(NewEvent, Vec<NewDelivery>)>,
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_rooms(&tx, events.iter().flat_map(|(_, d)| d.iter())).await?;
        let mut out = Vec::with_capacity(events.len());
        for (event, deliveries) in &events {
            out.push(accept_in(&tx, event, deliveries).await?);
        }
        self.announce(&tx, events.iter().flat_map(|(_, d)| d.iter()))
            .await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn complete_many(&self, done: Arc<[Completion]>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        for (outbox_id, delivered) in done.iter() {
            complete_in(&tx, *outbox_id, delivered.as_ref()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_by_remote(
        &self,
        account: &AccountId,
        room: &RoomId,
        remote: &RemoteMessageId,
    ) -> Result<Option<EventInfo>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT e.key, e.account, e.sender_name, e.thread_root, e.sender_id \
                 FROM remote_ids m JOIN events e ON e.key = m.key \
                 WHERE m.account = $1 AND m.room = $2 AND m.remote_id = $3",
            )
            .await?;
        client
            .query_opt(
                &stmt,
                &[&account.as_str(), &room.as_str(), &remote.as_str()],
            )
            .await?
            .as_ref()
            .map(info_from)
            .transpose()
    }

    async fn event_info(&self, key: EventKey) -> Result<Option<EventInfo>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT key, account, sender_name, thread_root, sender_id FROM events WHERE key = $1",
            )
            .await?;
        client
            .query_opt(&stmt, &[&key.to_bytes().to_vec()])
            .await?
            .as_ref()
            .map(info_from)
            .transpose()
    }

    async fn remote_id(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
    ) -> Result<Option<RemoteMessageId>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT remote_id FROM remote_ids WHERE key = $1 AND account = $2 AND room = $3 LIMIT 1",
            )
            .await?;
        let row = client
            .query_opt(
                &stmt,
                &[&key.to_bytes().to_vec(), &account.as_str(), &room.as_str()],
            )
            .await?;
        row.map(|r| r.try_get::<_, String>(0).map(RemoteMessageId::new))
            .transpose()
            .map_err(Into::into)
    }

    async fn pending(
        &self,
        account: &AccountId,
        room: &RoomId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, key, payload, created_at FROM outbox \
                 WHERE account = $1 AND room = $2 AND id > $3 ORDER BY id LIMIT $4",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&account.as_str(), &room.as_str(), &after, &limit])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxEntry {
                    id: row.try_get(0)?,
                    key: key_from(row.try_get(1)?)?,
                    account: account.clone(),
                    room: room.clone(),
                    payload: row.try_get(2)?,
                    queued_at: from_ms(row.try_get(3)?),
                })
            })
            .collect()
    }

    async fn pending_destinations(&self) -> Result<Vec<(AccountId, RoomId)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT DISTINCT account, room FROM outbox", &[])
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    AccountId::new(row.try_get::<_, String>(0)?),
                    RoomId::new(row.try_get::<_, String>(1)?),
                ))
            })
            .collect()
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM outbox", &[])
            .await?
            .try_get(0)?;
        Ok(count(n))
    }

    async fn pending_by_account(&self) -> Result<Vec<(AccountId, u64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT account, COUNT(*) FROM outbox GROUP BY account ORDER BY account COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    AccountId::new(row.try_get::<_, String>(0)?),
                    count(row.try_get(1)?),
                ))
            })
            .collect()
    }

    async fn room_counts(&self) -> Result<Vec<RoomCounts>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT account, room, COUNT(*) FILTER (WHERE queued), COUNT(*) FILTER (WHERE NOT queued) \
                 FROM (SELECT account, room, TRUE AS queued FROM outbox \
                       UNION ALL SELECT account, room, FALSE FROM dead_letters) t \
                 GROUP BY account, room ORDER BY account COLLATE \"C\", room COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RoomCounts {
                    account: AccountId::new(row.try_get::<_, String>(0)?),
                    room: RoomId::new(row.try_get::<_, String>(1)?),
                    queued: count(row.try_get(2)?),
                    dead: count(row.try_get(3)?),
                })
            })
            .collect()
    }

    async fn complete(
        &self,
        outbox_id: i64,
        delivered: Option<(EventKey, AccountId, RoomId, RemoteMessageId)>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        complete_in(&tx, outbox_id, delivered.as_ref()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let cutoff = ms(before);
        tx.execute("DELETE FROM remote_ids WHERE created_at < $1", &[&cutoff])
            .await?;
        let removed = tx
            .execute(
                "DELETE FROM events e WHERE e.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = e.key)",
                &[&cutoff],
            )
            .await?;
        tx.execute(
            "DELETE FROM connector_state WHERE recorded_at < $1",
            &[&cutoff],
        )
        .await?;
        tx.execute("DELETE FROM dead_letters WHERE created_at < $1", &[&cutoff])
            .await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn state_get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT value FROM connector_state WHERE account = $1 AND key = $2")
            .await?;
        let row = client.query_opt(&stmt, &[&account.as_str(), &key]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn state_put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
        recorded_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO connector_state (account, key, value, recorded_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account, key) DO UPDATE SET value = EXCLUDED.value, recorded_at = EXCLUDED.recorded_at",
            )
            .await?;
        let at = recorded_at.map(ms);
        client
            .execute(&stmt, &[&account.as_str(), &key, &value, &at])
            .await?;
        Ok(())
    }

    async fn state_delete(&self, account: &AccountId, key: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("DELETE FROM connector_state WHERE account = $1 AND key = $2")
            .await?;
        client.execute(&stmt, &[&account.as_str(), &key]).await?;
        Ok(())
    }

    async fn add_dynamic_link(&self, name: &str, rooms: String) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let added = client
            .execute(
                "INSERT INTO dynamic_links (name, rooms, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&name, &rooms, &ms(Timestamp::now())],
            )
            .await?;
        Ok(added == 1)
    }

    async fn dynamic_links(&self) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, rooms FROM dynamic_links ORDER BY created_at, name COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn dead_letter(
        &self,
        entry: &OutboxEntry,
        reason: &'static str,
        attempts: u32,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM outbox WHERE id = $1", &[&entry.id])
            .await?;
        tx.execute(
            "INSERT INTO dead_letters (id, key, account, room, reason, attempts, queued_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
             key = EXCLUDED.key, account = EXCLUDED.account, room = EXCLUDED.room, reason = EXCLUDED.reason, \
             attempts = EXCLUDED.attempts, queued_at = EXCLUDED.queued_at, created_at = EXCLUDED.created_at",
            &[
                &entry.id,
                &entry.key.to_bytes().to_vec(),
                &entry.account.as_str(),
                &entry.room.as_str(),
                &reason,
                &i64::from(attempts),
                &ms(entry.queued_at),
                &ms(now),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, key, account, room, reason, attempts, queued_at, created_at \
                 FROM dead_letters ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get(0)?,
                    key: key_from(row.try_get(1)?)?,
                    account: AccountId::new(row.try_get::<_, String>(2)?),
                    room: RoomId::new(row.try_get::<_, String>(3)?),
                    reason: row.try_get(4)?,
                    attempts: u32::try_from(row.try_get::<_, i64>(5)?).unwrap_or(u32::MAX),
                    queued_at: from_ms(row.try_get(6)?),
                    dead_at: from_ms(row.try_get(7)?),
                })
            })
            .collect()
    }

    async fn paste_put(
        &self,
        id: &str,
        expires_at: Timestamp,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO pastes (id, expires_at, payload) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, payload = EXCLUDED.payload",
                &[&id, &ms(expires_at), &sealed],
            )
            .await?;
        Ok(())
    }

    async fn paste_get(&self, id: &str, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT payload FROM pastes WHERE id = $1 AND expires_at > $2",
                &[&id, &ms(now)],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn paste_purge(&self, now: Timestamp) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM pastes WHERE expires_at <= $1", &[&ms(now)])
            .await?)
    }
}
