//! Callbacks kept for the account's owner (cluster mode; see `crate::relay`): sealed rows of
//! `relayed`, read in id order by the owner and deleted once handled.

use super::queries::room_lock;
use super::{PostgresStore, RELAY_CHANNEL};
use crate::store::StoreError;
use passerelle_sdk::{AccountId, RoomId};

impl PostgresStore {
    /// Keeps `sealed` for `account`, unless `max_waiting` of its calls wait already (then
    /// `false`, nothing kept), and announces it on [`RELAY_CHANNEL`] as `owner` when the
    /// transaction commits. One account's calls commit in the order they were kept, so the
    /// owner reading ids in order never passes over one still being written.
    pub async fn relay_keep(
        &self,
        account: &AccountId,
        owner: &str,
        sealed: &[u8],
        max_waiting: i64,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        // The empty room is no room: this lock is the account's relay order alone.
        let lock = room_lock(account, &RoomId::new(""));
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
            .await?;
        let waiting: i64 = tx
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM relayed WHERE account = $1 LIMIT $2) w",
                &[&account.as_str(), &max_waiting],
            )
            .await?
            .try_get(0)?;
        if waiting >= max_waiting {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO relayed (account, sealed) VALUES ($1, $2)",
            &[&account.as_str(), &sealed],
        )
        .await?;
        let notice = format!("{owner}\u{1f}{account}");
        // PostgreSQL takes notices under 8,000 bytes; without one, the owner's sweep finds it.
        if notice.len() < 7_900 {
            tx.execute("SELECT pg_notify($1, $2)", &[&RELAY_CHANNEL, &notice])
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` of `account`'s kept calls after id `after`, oldest first: (id, sealed).
    pub async fn relay_next(
        &self,
        account: &AccountId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, sealed FROM relayed WHERE account = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&account.as_str(), &after, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Forgets one kept call (handled, or refused by the connector).
    pub async fn relay_done(&self, id: i64) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute("DELETE FROM relayed WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// How many calls wait for each account that has any.
    pub async fn relay_waiting(&self) -> Result<Vec<(AccountId, i64)>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT account, count(*) FROM relayed GROUP BY account ORDER BY account",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((AccountId::new(r.try_get::<_, String>(0)?), r.try_get(1)?)))
            .collect()
    }
}
