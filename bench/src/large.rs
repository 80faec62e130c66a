//! The large-tables phase's bulk load: products and orders written straight into the write database,
//! row for row as the command service writes them, each with its outbox event, so that the real relay
//! and consumer build the read side from them as they would from orders placed over HTTP.
//!
//! The events are the command service's in everything but whitespace: the same envelope, fields in the
//! same order, UUIDv7 event ids, millisecond UTC timestamps, and amounts written without trailing zeros
//! (PostgreSQL's `json_build_object` puts a space around each colon, which serde does not).

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;

/// Orders per transaction: the relay publishes one chunk while the next is written.
const CHUNK: i64 = 50_000;

/// What the load wrote.
pub struct Loaded {
    pub products: Vec<i64>,
    pub elapsed: Duration,
}

/// A UUIDv7 for the timestamp `$at` (milliseconds since the epoch in its first 48 bits, version 7), from
/// a random (version 4) one: SQL, for the statements below.
macro_rules! uuid_v7 {
    ($at:literal) => {
        concat!(
            "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing \
             substring(int8send((extract(epoch from ",
            $at,
            ") * 1000)::bigint) from 3) from 1 for 6), 52, 1), 53, 1), 'hex')::uuid"
        )
    };
}

/// A timestamp as the events write it: `2026-11-24T06:30:00.123Z`.
macro_rules! event_time {
    ($at:literal) => {
        concat!("to_char(", $at, " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
}

const PRODUCTS: &str = concat!(
    "with created as (
         insert into products (name, category, price, stock)
         select 'Large product ' || i, 'Large category ' || (i % 50), 5 + (i % 200) + 0.99, 1000000000
           from generate_series(1, $1::bigint) as i
         returning id, name, category, price, stock, version, created_at
     ), events as (
         select ",
    uuid_v7!("created_at"),
    " as event_id, *, ",
    event_time!("date_trunc('milliseconds', created_at)"),
    " as at from created
     ), outbox as (
         insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
         select event_id, 'ProductCreated', id,
                json_build_object('eventId', event_id, 'eventType', 'ProductCreated', 'schemaVersion', 1,
                                  'occurredAt', at, 'aggregateId', id,
                                  'payload', json_build_object('productId', id, 'name', name, 'category', category,
                                                               'price', trim_scale(price), 'stock', stock,
                                                               'version', version)),
                date_trunc('milliseconds', created_at)
           from events order by id
     )
     select id from created order by id"
);

/// Orders `$1` to `$2` of the load, for customers `$3 + n`, over the past year: two lines each, a
/// product picked by a hash of `n` from `$4` and the next one, quantities 1 and 2.
const ORDERS: &str = concat!(
    "with spec as materialized (
         select n, $3::bigint + n as customer_id,
                date_trunc('milliseconds', now() - (h & 65535) * interval '481 seconds') as ordered_at,
                abs((h >> 16) % cardinality($4::bigint[]))::int as pick
           from generate_series($1::bigint, $2::bigint) as n, hashint8extended(n, 0) as h
     ), lines as materialized (
         select s.n, s.customer_id, s.ordered_at, a.id as a_id, a.name as a_name, a.category as a_category,
                a.price as a_price, b.id as b_id, b.name as b_name, b.category as b_category, b.price as b_price
           from spec s
           join products a on a.id = ($4::bigint[])[1 + s.pick]
           join products b on b.id = ($4::bigint[])[1 + (s.pick + 1) % cardinality($4::bigint[])]
     ), placed as (
         insert into orders (customer_id, total, created_at)
         select customer_id, a_price + 2 * b_price, ordered_at from lines order by n
         returning id, customer_id, total
     ), placed_orders as materialized (
         select p.id, p.total, l.*, ",
    uuid_v7!("l.ordered_at"),
    " as event_id, ",
    event_time!("l.ordered_at"),
    " as at
           from placed p join lines l using (customer_id)
     ), items as (
         insert into order_items (order_id, product_id, quantity, unit_price)
         select id, a_id, 1, a_price from placed_orders
         union all
         select id, b_id, 2, b_price from placed_orders
     )
     insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
     select event_id, 'OrderCreated', id,
            json_build_object(
                'eventId', event_id, 'eventType', 'OrderCreated', 'schemaVersion', 1, 'occurredAt', at,
                'aggregateId', id,
                'payload', json_build_object(
                    'orderId', id, 'customerId', customer_id, 'orderedAt', at, 'total', trim_scale(total),
                    'items', json_build_array(
                        json_build_object('productId', a_id, 'productName', a_name, 'category', a_category,
                                          'unitPrice', trim_scale(a_price), 'quantity', 1),
                        json_build_object('productId', b_id, 'productName', b_name, 'category', b_category,
                                          'unitPrice', trim_scale(b_price), 'quantity', 2)))),
            ordered_at
       from placed_orders order by id"
);

/// The units the load sold, taken from stock as the orders would have taken them.
const STOCK: &str = "update products p set stock = p.stock - sold.units
                       from (select product_id, sum(quantity) as units from order_items
                              where product_id = any($1) group by product_id) as sold
                      where p.id = sold.product_id";

/// Writes `products` products, then `orders` orders for as many new customers from `first_customer` on,
/// with their events, in transactions of [`CHUNK`] orders; `progress` hears of every chunk.
pub async fn load(
    pool: &PgPool,
    products: i64,
    orders: i64,
    first_customer: i64,
    progress: impl Fn(i64),
) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let ids: Vec<i64> =
        sqlx::query_scalar(PRODUCTS).bind(products).fetch_all(pool).await.context("cannot load the products")?;
    let mut from = 0;
    while from < orders {
        let to = (from + CHUNK).min(orders) - 1;
        sqlx::query(ORDERS)
            .bind(from)
            .bind(to)
            .bind(first_customer)
            .bind(&ids)
            .execute(pool)
            .await
            .with_context(|| format!("cannot load orders {from} to {to}"))?;
        from = to + 1;
        progress(from);
    }
    sqlx::query(STOCK).bind(&ids).execute(pool).await.context("cannot take the sold units from stock")?;
    Ok(Loaded { products: ids, elapsed: started.elapsed() })
}

/// A hot table after the load: rows, dead rows not yet vacuumed, and its size with indexes and TOAST.
#[derive(Debug, serde::Serialize)]
pub struct Table {
    pub database: &'static str,
    pub table: String,
    pub live_rows: i64,
    pub dead_rows: i64,
    pub megabytes: f64,
    pub last_autovacuum: Option<String>,
}

pub async fn tables(write: &PgPool, read: &PgPool) -> anyhow::Result<Vec<Table>> {
    let mut tables = Vec::new();
    for (database, pool, names) in [
        ("write", write, &["outbox", "orders", "order_items", "products", "idempotency_keys"][..]),
        ("read", read, &["processed_events", "customer_ltv_view", "product_sales_view", "hourly_sales_view"][..]),
    ] {
        let rows: Vec<(String, i64, i64, i64, Option<String>)> = sqlx::query_as(
            "select relname::text, n_live_tup, n_dead_tup, pg_total_relation_size(relid),
                    to_char(last_autovacuum at time zone 'UTC', 'HH24:MI:SS')
               from pg_stat_user_tables where relname = any($1) order by relname",
        )
        .bind(names)
        .fetch_all(pool)
        .await?;
        tables.extend(rows.into_iter().map(|(table, live_rows, dead_rows, bytes, last_autovacuum)| Table {
            database,
            table,
            live_rows,
            dead_rows,
            megabytes: (bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
            last_autovacuum,
        }));
    }
    Ok(tables)
}

/// One statement's plan on the large tables.
#[derive(Debug, serde::Serialize)]
pub struct Plan {
    pub database: &'static str,
    pub what: &'static str,
    pub plan: String,
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the statements that must not grow with the tables, each in a
/// transaction that is rolled back (the claim and the prunes would otherwise delete what they find).
/// The values are the load's own products and customers.
pub async fn plans(write: &PgPool, read: &PgPool, products: &[i64], first_customer: i64) -> anyhow::Result<Vec<Plan>> {
    let (a, b) = (products[products.len() / 2], products[products.len() / 2 + 1]);
    let customer = first_customer + 123_457;
    let statements: [(&'static str, &PgPool, &'static str, String); 9] = [
        (
            "write",
            write,
            "an order locks its products",
            format!("select id, name, category, price, stock from products where id = any('{{{a},{b}}}') order by id for update"),
        ),
        (
            "write",
            write,
            "the relay claims a batch",
            "delete from outbox where id in (select id from outbox order by id limit 500 for update skip locked) \
             returning id, event_type, body"
                .into(),
        ),
        (
            "write",
            write,
            "the relay counts the backlog",
            "with head as (select id, occurred_at from outbox order by id limit 1001) select case when count(*) <= 1000 \
             then count(*) else (select max(id) from outbox) - min(id) + 1 end, min(occurred_at) from head"
                .into(),
        ),
        (
            "write",
            write,
            "idempotency keys are pruned",
            "delete from idempotency_keys where (scope, key) in (select scope, key from idempotency_keys \
             where created_at < now() - interval '1 day' limit 10000)"
                .into(),
        ),
        (
            "read",
            read,
            "product sales",
            format!(
                "select total_quantity_sold, total_revenue, order_count from product_sales_view where product_id = {a}"
            ),
        ),
        (
            "read",
            read,
            "customer lifetime value",
            format!(
                "select total_spent, order_count, last_order_at from customer_ltv_view where customer_id = {customer}"
            ),
        ),
        (
            "read",
            read,
            "top products by revenue",
            "select product_id, product_name, category, total_quantity_sold, total_revenue, order_count \
             from product_sales_view order by total_revenue desc, product_id limit 10"
                .into(),
        ),
        (
            "read",
            read,
            "the catalog's categories, one index probe each",
            "with recursive listed (category) as ((select category from products order by category limit 1) \
             union all select (select p.category from products p where p.category > l.category order by p.category \
             limit 1) from listed l where l.category is not null) select count(category) from listed"
                .into(),
        ),
        (
            "read",
            read,
            "processed-event hashes are pruned",
            "delete from processed_events where hash in (select hash from processed_events \
             where processed_at < now() - interval '7 days' limit 10000)"
                .into(),
        ),
    ];
    let mut plans = Vec::new();
    for (database, pool, what, statement) in statements {
        let mut tx = pool.begin().await?;
        let lines: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("explain (analyze, buffers) {statement}")))
                .fetch_all(&mut *tx)
                .await
                .with_context(|| format!("cannot explain {what}"))?;
        tx.rollback().await?;
        plans.push(Plan { database, what, plan: lines.join("\n") });
    }
    Ok(plans)
}

/// `consumer-service verify` and then `rebuild` over the large tables, with nothing else loading.
#[derive(Debug, serde::Serialize)]
pub struct Maintenance {
    /// Orders in the write database.
    pub orders: i64,
    pub verify_status: String,
    pub verify_keys: u64,
    pub verify_seconds: f64,
    pub verify_keys_per_s: f64,
    pub verify_orders_per_s: f64,
    pub rebuild_rows: u64,
    /// The build of the shadow tables alone, and rows per second of it.
    pub rebuild_build_seconds: f64,
    pub rebuild_rows_per_s: f64,
    /// The whole rebuild: cut, build, catch-up and swap.
    pub rebuild_seconds: f64,
    pub rebuild_swap_ms: f64,
}

/// Runs `binary verify` and `binary rebuild` (the databases' URLs from this process's environment) and
/// reads their JSON reports.
pub async fn maintenance(binary: &std::path::Path, write: &PgPool) -> anyhow::Result<Maintenance> {
    let orders: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(write).await?;
    let run = |command: &'static str| async move {
        let output = tokio::process::Command::new(binary)
            .args([command, "--output", "json"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{command} printed no JSON report (exit {:?})", output.status.code()))?;
        anyhow::Ok(report)
    };
    let verify = run("verify").await?;
    let rebuild = run("rebuild").await?;
    anyhow::ensure!(rebuild["status"] == "rebuilt", "the rebuild failed: {rebuild}");
    let number = |report: &serde_json::Value, field: &str| report[field].as_f64().unwrap_or_default();
    let keys: u64 = verify["views"].as_array().into_iter().flatten().filter_map(|v| v["keys"].as_u64()).sum();
    let verify_seconds = number(&verify, "seconds");
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Ok(Maintenance {
        orders,
        verify_status: verify["status"].as_str().unwrap_or("unknown").to_owned(),
        verify_keys: keys,
        verify_seconds: round(verify_seconds),
        verify_keys_per_s: round(keys as f64 / verify_seconds.max(0.001)),
        verify_orders_per_s: round(orders as f64 / verify_seconds.max(0.001)),
        rebuild_rows: rebuild["rows"].as_u64().unwrap_or_default(),
        rebuild_build_seconds: round(number(&rebuild, "buildSeconds")),
        rebuild_rows_per_s: round(number(&rebuild, "rowsPerSecond")),
        rebuild_seconds: round(number(&rebuild, "seconds")),
        rebuild_swap_ms: round(number(&rebuild, "swapMilliseconds")),
    })
}
