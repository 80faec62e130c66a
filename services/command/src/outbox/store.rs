//! The `outbox` table: every statement the write side runs on it.
//!
//! Handlers [`enqueue`] inside their own transaction. The relay claims a batch by leasing rows
//! (`FOR UPDATE SKIP LOCKED`, so concurrent relays take disjoint batches), marks them published once
//! the broker has confirmed them, or releases them at once if publishing failed. Published rows are
//! pruned after a retention period.

use std::time::Duration;

use analytics_events::{Envelope, EventType};
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{FromRow, PgConnection, PgPool};
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

    /// Leases the oldest `limit` unpublished rows that no other relay holds, for `lease`; they come back
    /// in id order.
    pub async fn claim(&self, limit: i64, lease: Duration) -> sqlx::Result<Vec<OutboxEvent>> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "update outbox set claimed_until = now() + $2 * interval '1 millisecond'
              where id in (
                    select id from outbox
                     where published_at is null and (claimed_until is null or claimed_until < now())
                     order by id
                     limit $1
                       for update skip locked)
          returning id, event_id, event_type, body::text as body, occurred_at",
        )
        .bind(limit)
        .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut batch: Vec<OutboxEvent> = rows
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
        batch.sort_by_key(|event| event.id);
        Ok(batch)
    }

    pub async fn mark_published(&self, batch: &[OutboxEvent]) -> sqlx::Result<()> {
        sqlx::query("update outbox set published_at = now(), claimed_until = null where id = any($1)")
            .bind(ids(batch))
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Gives back a batch that failed to publish, instead of letting its lease run out.
    pub async fn release(&self, batch: &[OutboxEvent]) -> sqlx::Result<()> {
        sqlx::query("update outbox set claimed_until = null where id = any($1) and published_at is null")
            .bind(ids(batch))
            .execute(&self.pool)
            .await
            .map(drop)
    }

    pub async fn backlog(&self) -> sqlx::Result<Backlog> {
        sqlx::query_as(
            "select count(*) as pending, min(occurred_at) as oldest_pending_at from outbox where published_at is null",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Deletes up to 10 000 rows published longer than `retention` ago; returns how many.
    pub async fn prune(&self, retention: Duration) -> u64 {
        let delete = "delete from outbox where id in (
                          select id from outbox where published_at < now() - $1 * interval '1 second' limit $2)";
        analytics_kit::db::prune(&self.pool, "published outbox rows", delete, retention).await
    }
}

fn ids(batch: &[OutboxEvent]) -> Vec<i64> {
    batch.iter().map(|event| event.id).collect()
}
