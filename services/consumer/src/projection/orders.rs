//! OrderCreated into the four analytics views. A batch is first folded into one delta per key, then
//! each view gets one `insert … on conflict do update` with its keys in sorted order.

use std::collections::{BTreeMap, BTreeSet};

use analytics_events::{Money, OrderCreated};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

#[derive(Default)]
struct ProductDelta<'a> {
    name: &'a str,
    category: &'a str,
    quantity: i64,
    revenue: Money,
    orders: i64,
}

#[derive(Default)]
struct CategoryDelta {
    revenue: Money,
    quantity: i64,
    orders: i64,
}

struct CustomerDelta {
    spent: Money,
    orders: i64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

#[derive(Default)]
struct HourDelta {
    orders: i64,
    items: i64,
    revenue: Money,
}

pub async fn apply(conn: &mut PgConnection, orders: &[&OrderCreated]) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let mut products: BTreeMap<i64, ProductDelta> = BTreeMap::new();
    let mut categories: BTreeMap<&str, CategoryDelta> = BTreeMap::new();
    let mut customers: BTreeMap<i64, CustomerDelta> = BTreeMap::new();
    let mut hours: BTreeMap<DateTime<Utc>, HourDelta> = BTreeMap::new();

    for order in orders {
        let mut order_categories = BTreeSet::new();
        let mut order_items = 0;
        for item in &order.items {
            let line = item.unit_price * item.quantity;
            let product = products.entry(item.product_id).or_default();
            product.name = &item.product_name;
            product.category = &item.category;
            product.quantity += item.quantity;
            product.revenue = product.revenue + line;
            // An order names a product once (the command side refuses repeats), so it counts once here.
            product.orders += 1;
            let category = categories.entry(&item.category).or_default();
            category.revenue = category.revenue + line;
            category.quantity += item.quantity;
            order_categories.insert(item.category.as_str());
            order_items += item.quantity;
        }
        // An order counts once per category, however many of its items are in it.
        for category in order_categories {
            categories.entry(category).or_default().orders += 1;
        }
        let customer = customers.entry(order.customer_id).or_insert(CustomerDelta {
            spent: Money::ZERO,
            orders: 0,
            first: order.ordered_at,
            last: order.ordered_at,
        });
        customer.spent = customer.spent + order.total;
        customer.orders += 1;
        customer.first = customer.first.min(order.ordered_at);
        customer.last = customer.last.max(order.ordered_at);
        let hour = hours.entry(utc_hour(order.ordered_at)).or_default();
        hour.orders += 1;
        hour.items += order_items;
        hour.revenue = hour.revenue + order.total;
    }

    let ids: Vec<i64> = products.keys().copied().collect();
    let names: Vec<&str> = products.values().map(|p| p.name).collect();
    let product_categories: Vec<&str> = products.values().map(|p| p.category).collect();
    let quantities: Vec<i64> = products.values().map(|p| p.quantity).collect();
    let revenues: Vec<Decimal> = products.values().map(|p| p.revenue.amount()).collect();
    let counts: Vec<i64> = products.values().map(|p| p.orders).collect();
    sqlx::query(
        "insert into product_sales_view as v (product_id, product_name, category, total_quantity_sold, total_revenue, order_count)
         select * from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::bigint[]) order by 1
         on conflict (product_id) do update set
             product_name = excluded.product_name,
             category = excluded.category,
             total_quantity_sold = v.total_quantity_sold + excluded.total_quantity_sold,
             total_revenue = v.total_revenue + excluded.total_revenue,
             order_count = v.order_count + excluded.order_count,
             updated_at = now()",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&product_categories)
    .bind(&quantities)
    .bind(&revenues)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;

    let names: Vec<&str> = categories.keys().copied().collect();
    let revenues: Vec<Decimal> = categories.values().map(|c| c.revenue.amount()).collect();
    let quantities: Vec<i64> = categories.values().map(|c| c.quantity).collect();
    let counts: Vec<i64> = categories.values().map(|c| c.orders).collect();
    sqlx::query(
        "insert into category_metrics_view as v (category, total_revenue, total_quantity, total_orders)
         select * from unnest($1::text[], $2::numeric[], $3::bigint[], $4::bigint[]) order by 1
         on conflict (category) do update set
             total_revenue = v.total_revenue + excluded.total_revenue,
             total_quantity = v.total_quantity + excluded.total_quantity,
             total_orders = v.total_orders + excluded.total_orders,
             updated_at = now()",
    )
    .bind(&names)
    .bind(&revenues)
    .bind(&quantities)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;

    let ids: Vec<i64> = customers.keys().copied().collect();
    let spent: Vec<Decimal> = customers.values().map(|c| c.spent.amount()).collect();
    let counts: Vec<i64> = customers.values().map(|c| c.orders).collect();
    let firsts: Vec<DateTime<Utc>> = customers.values().map(|c| c.first).collect();
    let lasts: Vec<DateTime<Utc>> = customers.values().map(|c| c.last).collect();
    sqlx::query(
        "insert into customer_ltv_view as v (customer_id, total_spent, order_count, first_order_at, last_order_at)
         select * from unnest($1::bigint[], $2::numeric[], $3::bigint[], $4::timestamptz[], $5::timestamptz[]) order by 1
         on conflict (customer_id) do update set
             total_spent = v.total_spent + excluded.total_spent,
             order_count = v.order_count + excluded.order_count,
             first_order_at = least(v.first_order_at, excluded.first_order_at),
             last_order_at = greatest(v.last_order_at, excluded.last_order_at),
             updated_at = now()",
    )
    .bind(&ids)
    .bind(&spent)
    .bind(&counts)
    .bind(&firsts)
    .bind(&lasts)
    .execute(&mut *conn)
    .await?;

    let starts: Vec<DateTime<Utc>> = hours.keys().copied().collect();
    let counts: Vec<i64> = hours.values().map(|h| h.orders).collect();
    let items: Vec<i64> = hours.values().map(|h| h.items).collect();
    let revenues: Vec<Decimal> = hours.values().map(|h| h.revenue.amount()).collect();
    sqlx::query(
        "insert into hourly_sales_view as v (hour, order_count, items_sold, revenue)
         select * from unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::numeric[]) order by 1
         on conflict (hour) do update set
             order_count = v.order_count + excluded.order_count,
             items_sold = v.items_sold + excluded.items_sold,
             revenue = v.revenue + excluded.revenue,
             updated_at = now()",
    )
    .bind(&starts)
    .bind(&counts)
    .bind(&items)
    .bind(&revenues)
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The start of the UTC hour containing `at`.
fn utc_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn hours_are_utc_hours_of_the_order_time() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 23, 59, 59).unwrap();
        assert_eq!(utc_hour(at), Utc.with_ymd_and_hms(2026, 11, 24, 23, 0, 0).unwrap());
    }
}
