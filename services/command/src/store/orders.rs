//! Orders and their lines, and the catalog rows an order locks.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::domain::{CatalogEntry, PricedOrder};

#[derive(FromRow)]
struct CatalogRow {
    id: i64,
    name: String,
    category: String,
    price: Decimal,
    stock: i32,
}

/// Locks the catalog rows of `ids` until the transaction ends, in id order: two orders for the same
/// products then never wait on each other in a cycle. Unknown ids are simply absent.
pub async fn lock_products(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<Vec<CatalogEntry>> {
    let rows: Vec<CatalogRow> = sqlx::query_as(
        "select id, name, category, price, stock from products where id = any($1) order by id for update",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CatalogEntry {
            id: row.id,
            name: row.name,
            category: row.category,
            price: row.price.into(),
            stock: row.stock,
        })
        .collect())
}

/// Takes the order's units from stock and stores the order with its lines; returns the order id.
pub async fn insert(conn: &mut PgConnection, order: &PricedOrder, ordered_at: DateTime<Utc>) -> sqlx::Result<i64> {
    let ids: Vec<i64> = order.lines.iter().map(|line| line.product_id).collect();
    let quantities: Vec<i64> = order.lines.iter().map(|line| line.quantity).collect();
    let prices: Vec<Decimal> = order.lines.iter().map(|line| line.unit_price.amount()).collect();
    // Data-modifying CTEs all run, once, whether or not the final select reads them. Quantities travel as
    // bigint, like the event's; the integer columns take them with a checked cast.
    sqlx::query_scalar(
        "with stock as (
             update products p set stock = p.stock - l.quantity
               from unnest($1::bigint[], $2::bigint[]) as l(id, quantity)
              where p.id = l.id
         ), new_order as (
             insert into orders (customer_id, total, created_at) values ($3, $4, $5) returning id
         ), lines as (
             insert into order_items (order_id, product_id, quantity, unit_price)
             select new_order.id, l.id, l.quantity, l.price
               from new_order, unnest($1::bigint[], $2::bigint[], $6::numeric[]) as l(id, quantity, price)
         )
         select id from new_order",
    )
    .bind(&ids)
    .bind(&quantities)
    .bind(order.customer_id)
    .bind(order.total.amount())
    .bind(ordered_at)
    .bind(&prices)
    .fetch_one(conn)
    .await
}

/// An order as stored, with its lines in product id order.
pub struct StoredOrder {
    pub id: i64,
    pub customer_id: i64,
    pub total: Decimal,
    pub created_at: DateTime<Utc>,
    pub lines: Vec<StoredLine>,
}

#[derive(FromRow)]
pub struct StoredLine {
    pub product_id: i64,
    pub name: String,
    pub category: String,
    pub quantity: i32,
    pub unit_price: Decimal,
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<StoredOrder>> {
    let order: Option<(i64, i64, Decimal, DateTime<Utc>)> =
        sqlx::query_as("select id, customer_id, total, created_at from orders where id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let Some((id, customer_id, total, created_at)) = order else { return Ok(None) };
    let lines = sqlx::query_as(
        "select i.product_id, p.name, p.category, i.quantity, i.unit_price
           from order_items i join products p on p.id = i.product_id
          where i.order_id = $1
          order by i.product_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(StoredOrder { id, customer_id, total, created_at, lines }))
}
