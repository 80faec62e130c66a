//! The `outbox` table: every statement the write side runs on it.
//!
//! Handlers [`enqueue`] inside their own transaction. The relay claims a batch by deleting it
//! (`DELETE … FOR UPDATE SKIP LOCKED … RETURNING`, so concurrent relays take disjoint batches) in a
//! transaction that it commits only once the broker has confirmed every message, and rolls back
//! otherwise: the table holds exactly the events not yet published, and a batch costs one statement,
//! with no lease, mark or prune. If the relay dies or stalls while it holds a claim, PostgreSQL ends
//! the transaction (on the closed connection, or after `idle_in_transaction_session_timeout`) and the
//! rows are back, to be published again: at least once, never lost.

use std::time::Duration;

use analytics_events::{Envelope, EventType};
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{AssertSqlSafe, FromRow, PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Writes `event` to the outbox. Call it inside the transaction that makes the change it describes.
pub async fn enqueue<P: Serialize + DeserializeOwned>(
    conn: &mut PgConnection,
    event: &Envelope<P>,
) -> sqlx::Result<()> {
    let body = String::from_utf8(event.to_body()).expect("JSON is UTF-8");
    sqlx::query(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at) values ($1, $2, $3, $4::json, $5)",
    )
    .bind(event.event_id)
    .bind(event.event_type.as_str())
    .bind(event.aggregate_id)
    .bind(body)
    .bind(event.occurred_at)
    .execute(conn)
    .await
    .map(drop)
}

/// One outbox row on its way to the broker.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The exact message body stored at write time.
    pub body: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ClaimedRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    body: String,
    occurred_at: DateTime<Utc>,
}

/// How many outbox rows [`Outbox::backlog`] counts one by one before it estimates.
pub const BACKLOG_COUNTED: i64 = 1000;

/// Unpublished rows: how many, and the occurredAt of the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// The relay's side of the table.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
}

impl Outbox {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Claims the oldest `limit` rows that no other relay holds, in id order. They stay claimed until
    /// the claim is [committed](Claim::commit) or dropped; if neither happens within `hold`,
    /// PostgreSQL ends the transaction and they are free again.
    pub async fn claim(&self, limit: i64, hold: Duration) -> sqlx::Result<Claim> {
        // BEGIN and the timeout travel in one round trip (a simple query).
        let hold_ms = hold.as_millis().max(1);
        let mut tx = self
            .pool
            .begin_with(AssertSqlSafe(format!("begin; set local idle_in_transaction_session_timeout = {hold_ms}")))
            .await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "delete from outbox
              where id in (select id from outbox order by id limit $1 for update skip locked)
          returning id, event_id, event_type, body::text as body, occurred_at",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut events: Vec<OutboxEvent> = rows
            .into_iter()
            .map(|row| {
                // Only domain events have a routing key; anything else in the outbox is a bug, reported
                // with the row rather than sent.
                let event_type =
                    EventType::parse(&row.event_type).filter(|t| t.routing_key().is_some()).ok_or_else(|| {
                        sqlx::Error::Decode(
                            format!("outbox row {} holds {:?}, which is not a domain event", row.id, row.event_type)
                                .into(),
                        )
                    })?;
                Ok(OutboxEvent {
                    id: row.id,
                    event_id: row.event_id,
                    event_type,
                    body: row.body.into_bytes(),
                    occurred_at: row.occurred_at,
                })
            })
            .collect::<sqlx::Result<_>>()?;
        events.sort_by_key(|event| event.id);
        Ok(Claim { tx, events })
    }

    /// The backlog, read from the low end of the primary key, so that it costs the same however large
    /// the table file has grown: up to [`BACKLOG_COUNTED`] rows are counted; past that, `pending` is the
    /// span of ids from the oldest row to the newest, an upper bound (ids that never committed are
    /// gaps in it), and the oldest occurredAt is that of the first [`BACKLOG_COUNTED`] rows, which only
    /// a transaction that stayed open while as many later orders committed could undercut. A
    /// `count(*)` read the whole file: the table does not shrink after a backlog (vacuum never truncates
    /// it, see migrations/write/0005), and with 569 rows left in the 512 MB a backlog of a million had left, it
    /// took 141 ms, once a second and after every batch's watermark.
    pub async fn backlog(&self) -> sqlx::Result<Backlog> {
        sqlx::query_as(
            "with head as (select id, occurred_at from outbox order by id limit $1 + 1)
             select case when count(*) <= $1 then count(*) else (select max(id) from outbox) - min(id) + 1 end
                        as pending,
                    min(occurred_at) as oldest_pending_at
               from head",
        )
        .bind(BACKLOG_COUNTED)
        .fetch_one(&self.pool)
        .await
    }

    /// Vacuums the table, so that claims and backlog counts do not wade through the rows already
    /// published. Every published row leaves a dead tuple behind, at the rate of orders, while
    /// autovacuum looks at a table at most once a minute (`autovacuum_naptime`): 40 000 dead tuples at
    /// 700 orders/s made each claim take 12 ms instead of under 1. The dead index entries sit at the
    /// low end of the primary key, where no insert ever lands to clean them, so the index is vacuumed
    /// too. A vacuum already running elsewhere (another replica's) is skipped, not waited for.
    pub async fn vacuum(&self) {
        if let Err(error) = sqlx::raw_sql("vacuum (skip_locked, index_cleanup on) outbox").execute(&self.pool).await {
            tracing::debug!(%error, "cannot vacuum the outbox; autovacuum will");
        }
    }
}

/// A batch deleted from the outbox in a transaction still open: the rows are gone for everyone else, and
/// come back unless the claim is committed.
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    pub events: Vec<OutboxEvent>,
}

impl Claim {
    /// The events are confirmed by the broker: they leave the outbox for good.
    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }

    /// Publishing failed: the rows are back at once, for the next batch.
    pub async fn roll_back(self) -> sqlx::Result<()> {
        self.tx.rollback().await
    }
}
