//! Reads of the analytics views. Every query is a lookup by primary key or a short index scan.

use analytics_events::Money;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{FromRow, PgPool};

pub struct ProductSales {
    pub total_quantity_sold: i64,
    pub total_revenue: Money,
    pub order_count: i64,
}

/// A product's sales; `None` if the product is unknown (neither sold nor in the catalog replica).
pub async fn product_sales(pool: &PgPool, product_id: i64) -> sqlx::Result<Option<ProductSales>> {
    let sold: Option<(i64, Decimal, i64)> = sqlx::query_as(
        "select total_quantity_sold, total_revenue, order_count from product_sales_view where product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await?;
    if let Some((total_quantity_sold, revenue, order_count)) = sold {
        return Ok(Some(ProductSales { total_quantity_sold, total_revenue: revenue.into(), order_count }));
    }
    let known: bool = sqlx::query_scalar("select exists (select 1 from products where id = $1)")
        .bind(product_id)
        .fetch_one(pool)
        .await?;
    Ok(known.then_some(ProductSales { total_quantity_sold: 0, total_revenue: Money::ZERO, order_count: 0 }))
}

#[derive(FromRow)]
pub struct CategoryRow {
    pub category: String,
    pub total_revenue: Decimal,
    pub total_orders: i64,
    pub total_quantity: i64,
}

/// Every known category (sold in, or holding a product), with zeros where nothing sold, by revenue; `$1`
/// narrows it to one category, or null for all.
///
/// The catalog's categories come from a walk of the `products_category` index, one probe per category
/// (PostgreSQL 15 has no skip scan): `select distinct` read every product, 55 ms at 100 000 products.
const CATEGORIES: &str = "with recursive listed (category) as (
                              (select category from products where category >= coalesce($1, '') order by category limit 1)
                              union all
                              select (select p.category from products p where p.category > l.category
                                       order by p.category limit 1)
                                from listed l
                               where l.category is not null and $1::text is null
                          )
                          select c.category, coalesce(m.total_revenue, 0) as total_revenue,
                                 coalesce(m.total_orders, 0) as total_orders, coalesce(m.total_quantity, 0) as total_quantity
                            from (select category from listed where category is not null and ($1::text is null or category = $1)
                                  union
                                  select category from category_metrics_view where $1::text is null or category = $1) as c
                            left join category_metrics_view m on m.category = c.category
                           order by total_revenue desc, c.category";

/// A category's totals; `None` if no product and no sale is in it. A category with products but no
/// sales has zeros.
pub async fn category(pool: &PgPool, category: &str) -> sqlx::Result<Option<CategoryRow>> {
    sqlx::query_as(CATEGORIES).bind(category).fetch_optional(pool).await
}

/// Every category, by revenue, largest first.
pub async fn categories(pool: &PgPool) -> sqlx::Result<Vec<CategoryRow>> {
    sqlx::query_as(CATEGORIES).bind(None::<&str>).fetch_all(pool).await
}

pub struct CustomerValue {
    pub total_spent: Money,
    pub order_count: i64,
    pub last_order_at: Option<DateTime<Utc>>,
}

/// A customer's lifetime value; zeros for a customer without orders.
pub async fn customer(pool: &PgPool, customer_id: i64) -> sqlx::Result<CustomerValue> {
    let row: Option<(Decimal, i64, DateTime<Utc>)> =
        sqlx::query_as("select total_spent, order_count, last_order_at from customer_ltv_view where customer_id = $1")
            .bind(customer_id)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some((spent, orders, last)) => {
            CustomerValue { total_spent: spent.into(), order_count: orders, last_order_at: Some(last) }
        }
        None => CustomerValue { total_spent: Money::ZERO, order_count: 0, last_order_at: None },
    })
}

#[derive(FromRow)]
pub struct CustomerCategoryRow {
    pub category: String,
    pub total_revenue: Decimal,
    pub total_quantity: i64,
    pub order_count: i64,
}

/// A customer's purchases per category, by revenue, largest first; empty for a customer without orders.
pub async fn customer_categories(pool: &PgPool, customer_id: i64) -> sqlx::Result<Vec<CustomerCategoryRow>> {
    sqlx::query_as(
        "select category, total_revenue, total_quantity, order_count from customer_category_view
          where customer_id = $1 order by total_revenue desc, category",
    )
    .bind(customer_id)
    .fetch_all(pool)
    .await
}

#[derive(FromRow)]
pub struct HourRow {
    pub hour: DateTime<Utc>,
    pub order_count: i64,
    pub items_sold: i64,
    pub revenue: Decimal,
}

/// Hours with sales in [from, to), oldest first.
pub async fn hourly(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> sqlx::Result<Vec<HourRow>> {
    sqlx::query_as(
        "select hour, order_count, items_sold, revenue from hourly_sales_view where hour >= $1 and hour < $2 order by hour",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TopBy {
    Revenue,
    Quantity,
}

#[derive(FromRow)]
pub struct TopProductRow {
    pub product_id: i64,
    pub product_name: String,
    pub category: String,
    pub total_quantity_sold: i64,
    pub total_revenue: Decimal,
    pub order_count: i64,
}

/// The best-selling products, by revenue or by quantity.
pub async fn top_products(pool: &PgPool, by: TopBy, limit: i64) -> sqlx::Result<Vec<TopProductRow>> {
    let sql = match by {
        TopBy::Revenue => {
            "select product_id, product_name, category, total_quantity_sold, total_revenue, order_count
               from product_sales_view order by total_revenue desc, product_id limit $1"
        }
        TopBy::Quantity => {
            "select product_id, product_name, category, total_quantity_sold, total_revenue, order_count
               from product_sales_view order by total_quantity_sold desc, product_id limit $1"
        }
    };
    sqlx::query_as(sql).bind(limit).fetch_all(pool).await
}

#[derive(FromRow)]
pub struct StreamProgress {
    pub stream: String,
    pub last_event_occurred_at: Option<DateTime<Utc>>,
    pub watermark_as_of: Option<DateTime<Utc>>,
    pub outbox_pending: i64,
    pub outbox_oldest_pending_at: Option<DateTime<Utc>>,
}

pub async fn progress(pool: &PgPool) -> sqlx::Result<Vec<StreamProgress>> {
    sqlx::query_as(
        "select stream, last_event_occurred_at, watermark_as_of, outbox_pending, outbox_oldest_pending_at from sync_state",
    )
    .fetch_all(pool)
    .await
}
