//! A consistent cut across the two databases: which orders the read model counts, exactly, while
//! orders flow and consumers apply them.
//!
//! 1. A repeatable-read snapshot of the read database. Every batch commits its views and its hashes
//!    together, so in this snapshot the views count exactly the orders whose hash is in
//!    `processed_events` (with their `order_id`), plus the orders older than the hashes' retention,
//!    whose hashes were pruned (or older than the migration that began to record order ids).
//! 2. Then a repeatable-read snapshot of the write database. An order is published only after its
//!    transaction commits, so every order the first snapshot counts is in this one.
//! 3. The orders of the write snapshot that are younger than the retention and have no hash in the
//!    read snapshot are in flight (in the outbox, the broker or a consumer's hands). The views in the
//!    read snapshot equal the history of the write snapshot without them, key by key: see
//!    [`crate::views::View::history`].

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

/// The most in-flight orders a cut holds (8 bytes each). A read side further behind is lagging, not
/// drifting, and is not worth comparing.
pub const MAX_IN_FLIGHT: usize = 1_000_000;

/// Orders younger than the retention by this much are still judged by their hash: it covers a clock
/// skew between the command service (which stamps `created_at`) and the read database (which stamps
/// `processed_at` and prunes by it).
const HORIZON_MARGIN: &str = "1 hour";

pub struct Cut {
    /// The read database's snapshot: its views, its hashes.
    pub read: Transaction<'static, Postgres>,
    /// The write database's snapshot, taken after `read`.
    pub write: Transaction<'static, Postgres>,
    /// The read database's clock when its snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// Orders created before this count as applied: their hashes may have been pruned, or may carry no
    /// order id.
    pub horizon: DateTime<Utc>,
    /// The ids of the write snapshot's orders since `horizon` that the read snapshot has not applied,
    /// sorted.
    pub in_flight: Vec<i64>,
    /// How many orders since `horizon` the read snapshot has applied.
    pub applied: u64,
}

impl Cut {
    /// Takes both snapshots and finds the orders in flight between them. `retention` is the consumers'
    /// `PROCESSED_EVENTS_RETENTION`.
    pub async fn take(read: &PgPool, write: &PgPool, retention: Duration) -> anyhow::Result<Self> {
        let mut read = snapshot(read).await.context("cannot open a snapshot of the read database")?;
        let taken_at: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()").fetch_one(&mut *read).await?;
        let recorded: Option<DateTime<Utc>> =
            sqlx::query_scalar("select since from order_ids_recorded").fetch_one(&mut *read).await?;
        let mut write = snapshot(write).await.context("cannot open a snapshot of the write database")?;
        let horizon: DateTime<Utc> = sqlx::query_scalar(AssertSqlSafe(format!(
            "select greatest(now() - make_interval(secs => $1), $2) + interval '{HORIZON_MARGIN}'"
        )))
        .bind(retention.as_secs_f64())
        .bind(recorded)
        .fetch_one(&mut *write)
        .await?;

        let first: Option<i64> = sqlx::query_scalar("select min(id) from orders where created_at >= $1")
            .bind(horizon)
            .fetch_one(&mut *write)
            .await?;
        let mut in_flight = Vec::new();
        let mut applied = 0;
        if let Some(first) = first {
            // Two ordered streams, merged: the write side's recent orders, the read side's applied ones.
            let mut recent = sqlx::query_scalar::<_, i64>("select id from orders where created_at >= $1 order by id")
                .bind(horizon)
                .fetch(&mut *write);
            let mut hashed = sqlx::query_scalar::<_, i64>(
                "select order_id from processed_events where order_id >= $1 order by order_id",
            )
            .bind(first)
            .fetch(&mut *read);
            let mut seen = hashed.try_next().await?;
            while let Some(id) = recent.try_next().await? {
                while seen.is_some_and(|seen| seen < id) {
                    seen = hashed.try_next().await?;
                }
                if seen == Some(id) {
                    applied += 1;
                } else if in_flight.len() == MAX_IN_FLIGHT {
                    bail!(
                        "the read side has not applied {MAX_IN_FLIGHT} or more committed orders: it is lagging, \
                         and a comparison would be meaningless until it catches up"
                    );
                } else {
                    in_flight.push(id);
                }
            }
        }
        Ok(Self { read, write, taken_at, horizon, in_flight, applied })
    }
}

/// What a report says of a cut.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CutReport {
    pub taken_at: DateTime<Utc>,
    /// Orders created before this count as applied (their hashes may be pruned).
    pub horizon: DateTime<Utc>,
    pub applied_orders_since_horizon: u64,
    pub in_flight_orders: usize,
}

impl Cut {
    pub fn report(&self) -> CutReport {
        CutReport {
            taken_at: self.taken_at,
            horizon: self.horizon,
            applied_orders_since_horizon: self.applied,
            in_flight_orders: self.in_flight.len(),
        }
    }
}

/// A read-only repeatable-read transaction whose snapshot is taken now.
async fn snapshot(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    sqlx::query("select 1").execute(&mut *tx).await?;
    Ok(tx)
}
