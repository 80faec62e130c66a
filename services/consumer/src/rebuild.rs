//! `consumer-service rebuild`: every view built afresh from the write database, online.
//!
//! All of it is one transaction of the read database, so a failure anywhere leaves the live views as
//! they were, and nobody ever sees a shadow:
//!
//! 1. **Cut.** A [`Cut`]: the set A₀ of orders the read snapshot counts (hashed, or older than the
//!    horizon), and the write snapshot.
//! 2. **Build.** Each view's history over A₀ is copied from the write snapshot into a shadow table made
//!    like the view (`<view>__rebuild`, same columns, constraints and indexes), with `COPY … TO STDOUT`
//!    on one side and `COPY … FROM STDIN` on the other. Consumers go on applying to the live views.
//! 3. **Catch up.** The orders applied since the cut are those whose hash was written after it (by
//!    `processed_at`, the clock of the hash's insert), less those the read snapshot already had. They are
//!    read from the write database and folded into the shadows with the consumers' own code, each once.
//!    Rounds repeat while the consumers keep adding.
//! 4. **Swap.** With [`APPLY_LOCK`] taken exclusively, no batch is half-applied and none can start. A
//!    last round catches up what remains; the catalog replica takes any newer product version from the
//!    live table; then each view is dropped and its shadow renamed in its place, indexes and all. The
//!    commit releases the consumers, whose next statements read and write the new tables.
//!
//! Why it is exactly once: at the swap the shadows count A₀ (built) plus every order applied since the
//! cut (caught up, each once, since a set of folded ids is kept), which is exactly the set of orders whose
//! hash is in `processed_events` (or that are older than the horizon). Every other order's hash is new to
//! `processed_events`, so a consumer applies it once, later; every redelivery of an applied one is a
//! duplicate, as always. The queries never stop: they read the old views until the commit, then the new.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use analytics_events::{Money, OrderCreated, OrderLine};
use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

use crate::{
    cut::{Cut, CutReport},
    projection::{APPLY_LOCK, Tables, orders},
    views::VIEWS,
};

/// The advisory lock key (of the read database) that makes one rebuild run at a time.
const REBUILD_LOCK: i64 = APPLY_LOCK + 1;

/// Held shared by every verify and exclusively by a rebuild, each for its whole run: a swap committed
/// after a verify's snapshot would leave that verify tables whose rows it cannot see (every key
/// `missing`), and a verify's reads would hold the swap's `drop table` off. A rebuild waits for the
/// verifies that run; a verify does not start while a rebuild runs.
const MAINTENANCE_LOCK: i64 = APPLY_LOCK + 2;

/// A session of the read database's own that holds the maintenance lock shared while it lives, or
/// `None` while a rebuild runs. Dropping it closes the session, which releases the lock on every path.
pub async fn verify_lock(read: &PgPool) -> sqlx::Result<Option<PgConnection>> {
    let mut session = read.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock_shared($1)")
        .bind(MAINTENANCE_LOCK)
        .fetch_one(&mut session)
        .await?;
    Ok(locked.then_some(session))
}

/// Hashes written this long before the cut are searched for orders applied after it: a batch's hash
/// insert and its commit are never that far apart.
const CATCH_UP_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// A round that folds fewer orders than this is followed by the swap.
const SMALL_ROUND: usize = 1_000;

/// How long the swap waits for a query to let go of a view before it catches up again and retries.
const SWAP_LOCK_TIMEOUT: &str = "2s";
const SWAP_ATTEMPTS: u32 = 30;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub status: &'static str,
    pub cut: CutReport,
    pub views: Vec<BuiltView>,
    /// Rows copied into the shadows, over the build's seconds.
    pub rows: u64,
    pub build_seconds: f64,
    pub rows_per_second: f64,
    /// Orders applied by the consumers during the rebuild, folded into the shadows.
    pub caught_up_orders: usize,
    /// How long the consumers waited at the swap.
    pub swap_milliseconds: f64,
    pub seconds: f64,
}

impl Report {
    /// The report for people.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for v in &self.views {
            text += &format!("{:<24} {:>10} rows\n", v.view, v.rows);
        }
        text + &self.headline() + "\n"
    }

    /// The outcome in one line.
    pub fn headline(&self) -> String {
        format!(
            "rebuilt: {} rows in {:.1} s ({:.0} rows/s), {} orders caught up, consumers paused {:.0} ms",
            self.rows, self.build_seconds, self.rows_per_second, self.caught_up_orders, self.swap_milliseconds
        )
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltView {
    pub view: &'static str,
    pub rows: u64,
}

pub async fn rebuild(read: &PgPool, write: &PgPool, retention: Duration) -> anyhow::Result<Report> {
    let started = Instant::now();
    // The locks are this session's: it closes when `guard` is dropped, on every path.
    let mut guard = read.acquire().await?.detach();
    let alone: bool =
        sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(REBUILD_LOCK).fetch_one(&mut guard).await?;
    if !alone {
        bail!("another rebuild of this read database is running");
    }
    let no_verify: bool =
        sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(MAINTENANCE_LOCK).fetch_one(&mut guard).await?;
    if !no_verify {
        tracing::info!("rebuild: waiting for the verifies that run to end");
        sqlx::query("select pg_advisory_lock($1)").bind(MAINTENANCE_LOCK).execute(&mut guard).await?;
    }

    let mut cut = Cut::take(read, write, retention).await?;
    let report = cut.report();
    tracing::info!(in_flight = cut.in_flight.len(), applied = cut.applied, "rebuild: cut taken");
    let since = cut.taken_at - CATCH_UP_MARGIN;
    let mut folded: HashSet<i64> =
        sqlx::query_scalar("select order_id from processed_events where processed_at >= $1 and order_id is not null")
            .bind(since)
            .fetch_all(&mut *cut.read)
            .await?
            .into_iter()
            .collect();

    let mut tx = read.begin().await?;
    let mut views = Vec::new();
    for view in VIEWS {
        let shadow = Tables::Shadow.of(view.name);
        run(&mut tx, format!("drop table if exists {shadow}")).await?;
        run(&mut tx, format!("create table {shadow} (like {} including all)", view.name)).await?;
        let mut source = cut.write.copy_out_raw(&format!("copy ({}) to stdout", view.history(&cut.in_flight))).await?;
        let mut sink = tx.copy_in_raw(&format!("copy {shadow} ({}) from stdin", view.column_list())).await?;
        let copied: sqlx::Result<()> = async {
            while let Some(chunk) = source.try_next().await? {
                sink.send(chunk).await?;
            }
            Ok(())
        }
        .await;
        drop(source);
        let rows = match copied {
            Ok(()) => sink.finish().await?,
            Err(error) => {
                drop(sink.abort("the copy from the write database failed").await);
                return Err(error).with_context(|| format!("cannot build {shadow}"));
            }
        };
        tracing::info!(view = view.name, rows, "rebuild: view built");
        views.push(BuiltView { view: view.name, rows });
    }
    let horizon = cut.horizon;
    drop(cut);
    let build_seconds = started.elapsed().as_secs_f64();

    let mut caught_up = 0;
    loop {
        let round = catch_up(&mut tx, write, since, horizon, &mut folded).await?;
        caught_up += round;
        tracing::info!(orders = round, "rebuild: caught up");
        if round < SMALL_ROUND {
            break;
        }
    }

    let mut attempt = 0;
    let swap_milliseconds = loop {
        attempt += 1;
        // A swap that is rolled back takes its catch-up round with it: those orders must be folded again.
        let folded_before = folded.clone();
        sqlx::query("savepoint swap").execute(&mut *tx).await?;
        let paused = Instant::now();
        match swap(&mut tx, write, since, horizon, &mut folded).await {
            Ok(round) => {
                caught_up += round;
                break paused.elapsed().as_secs_f64() * 1e3;
            }
            Err(error) if attempt < SWAP_ATTEMPTS && lock_timed_out(&error) => {
                sqlx::query("rollback to savepoint swap").execute(&mut *tx).await?;
                folded = folded_before;
                tracing::info!(attempt, "rebuild: a query held a view; catching up and trying again");
                caught_up += catch_up(&mut tx, write, since, horizon, &mut folded).await?;
            }
            Err(error) => return Err(error).context("cannot swap the rebuilt views in"),
        }
    };
    tx.commit().await?;
    guard.close().await?;

    let rows = views.iter().map(|v| v.rows).sum();
    tracing::info!(rows, caught_up, swap_milliseconds, "rebuild: done");
    Ok(Report {
        status: "rebuilt",
        cut: report,
        views,
        rows,
        build_seconds,
        rows_per_second: rows as f64 / build_seconds.max(1e-9),
        caught_up_orders: caught_up,
        swap_milliseconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Pauses the consumers, catches up the last orders, and puts the shadows in the views' place.
async fn swap(
    tx: &mut PgConnection,
    write: &PgPool,
    since: DateTime<Utc>,
    horizon: DateTime<Utc>,
    folded: &mut HashSet<i64>,
) -> sqlx::Result<usize> {
    run(tx, format!("set local lock_timeout = '{SWAP_LOCK_TIMEOUT}'")).await?;
    sqlx::query("select pg_advisory_xact_lock($1)").bind(APPLY_LOCK).execute(&mut *tx).await?;
    let round = catch_up(tx, write, since, horizon, folded).await?;
    let replica = VIEWS.iter().find(|v| v.replica).map_or("products", |v| v.name);
    run(
        tx,
        format!(
            "insert into {shadow} as s (id, name, category, price, version, updated_at)
         select id, name, category, price, version, updated_at from {replica}
         on conflict (id) do update set name = excluded.name, category = excluded.category, price = excluded.price,
                                        version = excluded.version, updated_at = excluded.updated_at
         where s.version < excluded.version",
            shadow = Tables::Shadow.of(replica)
        ),
    )
    .await?;
    for view in VIEWS {
        let shadow = Tables::Shadow.of(view.name);
        let names = indexes(tx, view.name).await?;
        run(tx, format!("drop table {}", view.name)).await?;
        run(tx, format!("alter table {shadow} rename to {}", view.name)).await?;
        // The shadow's indexes were named after it: each takes the name of the view's index it copies.
        for (definition, current) in indexes(tx, view.name).await? {
            if let Some(name) = names.get(&definition)
                && *name != current
            {
                run(tx, format!(r#"alter index "{current}" rename to "{name}""#)).await?;
            }
        }
    }
    sqlx::query("release savepoint swap").execute(&mut *tx).await?;
    Ok(round)
}

/// Runs a statement made of the views' own names (never of input).
async fn run(tx: &mut PgConnection, sql: String) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(tx).await.map(drop)
}

/// A table's indexes: their definitions without their names, and their names.
async fn indexes(tx: &mut PgConnection, table: &str) -> sqlx::Result<BTreeMap<String, String>> {
    sqlx::query_as(
        r"select regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX \S+ ON \S+ ', 'CREATE \1INDEX ON '),
                 c.relname::text
            from pg_index i join pg_class c on c.oid = i.indexrelid
           where i.indrelid = $1::regclass",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await
    .map(|rows| rows.into_iter().collect())
}

/// Folds into the shadows the orders applied since the cut that are not folded yet, and returns how many.
/// Orders older than the horizon are counted by the build already.
async fn catch_up(
    tx: &mut PgConnection,
    write: &PgPool,
    since: DateTime<Utc>,
    horizon: DateTime<Utc>,
    folded: &mut HashSet<i64>,
) -> sqlx::Result<usize> {
    let applied: Vec<i64> =
        sqlx::query_scalar("select order_id from processed_events where processed_at >= $1 and order_id is not null")
            .bind(since)
            .fetch_all(&mut *tx)
            .await?;
    let new: Vec<i64> = applied.into_iter().filter(|id| !folded.contains(id)).collect();
    if new.is_empty() {
        return Ok(0);
    }
    let orders = load_orders(write, &new, horizon).await?;
    let refs: Vec<&OrderCreated> = orders.iter().collect();
    orders::apply(tx, &refs, Tables::Shadow).await?;
    folded.extend(new.iter().copied());
    Ok(new.len())
}

/// The orders `ids` (those created since `horizon`) as their OrderCreated events tell them.
async fn load_orders(write: &PgPool, ids: &[i64], horizon: DateTime<Utc>) -> sqlx::Result<Vec<OrderCreated>> {
    type LineRow = (i64, i64, DateTime<Utc>, Decimal, i64, String, String, Decimal, i64);
    let mut lines = sqlx::query_as::<_, LineRow>(
        "select o.id, o.customer_id, o.created_at, o.total, i.product_id, p.name, p.category, i.unit_price,
                i.quantity::bigint
           from orders o join order_items i on i.order_id = o.id join products p on p.id = i.product_id
          where o.id = any($1) and o.created_at >= $2
          order by o.id, i.product_id",
    )
    .bind(ids)
    .bind(horizon)
    .fetch(write);
    let mut orders: Vec<OrderCreated> = Vec::new();
    while let Some((order_id, customer_id, ordered_at, total, product_id, product_name, category, price, quantity)) =
        lines.try_next().await?
    {
        if orders.last().is_none_or(|o| o.order_id != order_id) {
            orders.push(OrderCreated { order_id, customer_id, ordered_at, total: total.into(), items: Vec::new() });
        }
        if let Some(order) = orders.last_mut() {
            order.items.push(OrderLine {
                product_id,
                product_name,
                category,
                unit_price: Money::from(price),
                quantity,
            });
        }
    }
    Ok(orders)
}

/// Whether the swap gave up waiting for a lock (55P03, lock_not_available).
fn lock_timed_out(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}
