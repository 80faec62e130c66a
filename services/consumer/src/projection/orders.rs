//! OrderCreated into the five analytics views. [`fold`] turns a batch into one delta per key of each
//! view (the counting rules, with no I/O); then each view gets one `insert … on conflict do update`
//! with its keys in sorted order.

use std::collections::{BTreeMap, BTreeSet};

use analytics_events::{Money, OrderCreated};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, postgres::PgArguments, query::Query};

use super::Tables;

/// What a batch adds to one product's row of `product_sales_view`.
#[derive(Debug, Default, PartialEq)]
pub struct ProductDelta<'a> {
    /// The name and category of the product's last line in the batch (in delivery order).
    pub name: &'a str,
    pub category: &'a str,
    pub quantity: i64,
    pub revenue: Money,
    /// Distinct orders: an order names a product once (the command side refuses repeats).
    pub orders: i64,
}

/// What a batch adds to one row of `category_metrics_view`.
#[derive(Debug, Default, PartialEq)]
pub struct CategoryDelta {
    pub revenue: Money,
    pub quantity: i64,
    /// Orders with at least one line in the category, each counted once.
    pub orders: i64,
}

/// What a batch adds to one row of `customer_ltv_view`.
#[derive(Debug, PartialEq)]
pub struct CustomerDelta {
    pub spent: Money,
    pub orders: i64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// What a batch adds to one row of `hourly_sales_view`.
#[derive(Debug, Default, PartialEq)]
pub struct HourDelta {
    pub orders: i64,
    pub items: i64,
    pub revenue: Money,
}

/// What a batch adds to one row of `customer_category_view`.
#[derive(Debug, Default, PartialEq)]
pub struct CustomerCategoryDelta {
    pub revenue: Money,
    pub quantity: i64,
    /// The customer's orders with at least one line in the category, each counted once.
    pub orders: i64,
}

/// A batch folded into one delta per key of each view. The maps are sorted, so every upsert writes its
/// keys in the same order and concurrent consumers cannot deadlock on them.
#[derive(Debug, Default, PartialEq)]
pub struct Deltas<'a> {
    pub products: BTreeMap<i64, ProductDelta<'a>>,
    pub categories: BTreeMap<&'a str, CategoryDelta>,
    pub customers: BTreeMap<i64, CustomerDelta>,
    /// By the start of the UTC hour of each order's `orderedAt`.
    pub hours: BTreeMap<DateTime<Utc>, HourDelta>,
    pub customer_categories: BTreeMap<(i64, &'a str), CustomerCategoryDelta>,
}

/// The counting rules of the five views, applied to a batch of new orders.
pub fn fold<'a>(orders: &[&'a OrderCreated]) -> Deltas<'a> {
    let mut deltas = Deltas::default();
    for order in orders {
        let mut order_categories = BTreeSet::new();
        let mut order_items = 0;
        for item in &order.items {
            let line = item.unit_price * item.quantity;
            let product = deltas.products.entry(item.product_id).or_default();
            product.name = &item.product_name;
            product.category = &item.category;
            product.quantity += item.quantity;
            product.revenue = product.revenue + line;
            product.orders += 1;
            let category = deltas.categories.entry(&item.category).or_default();
            category.revenue = category.revenue + line;
            category.quantity += item.quantity;
            let bought = deltas.customer_categories.entry((order.customer_id, &item.category)).or_default();
            bought.revenue = bought.revenue + line;
            bought.quantity += item.quantity;
            order_categories.insert(item.category.as_str());
            order_items += item.quantity;
        }
        for category in order_categories {
            deltas.categories.entry(category).or_default().orders += 1;
            deltas.customer_categories.entry((order.customer_id, category)).or_default().orders += 1;
        }
        let customer = deltas.customers.entry(order.customer_id).or_insert(CustomerDelta {
            spent: Money::ZERO,
            orders: 0,
            first: order.ordered_at,
            last: order.ordered_at,
        });
        customer.spent = customer.spent + order.total;
        customer.orders += 1;
        customer.first = customer.first.min(order.ordered_at);
        customer.last = customer.last.max(order.ordered_at);
        let hour = deltas.hours.entry(utc_hour(order.ordered_at)).or_default();
        hour.orders += 1;
        hour.items += order_items;
        hour.revenue = hour.revenue + order.total;
    }
    deltas
}

/// Adds a batch of new orders to the five views of `tables`.
pub async fn apply(conn: &mut PgConnection, orders: &[&OrderCreated], tables: Tables) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let deltas = fold(orders);
    let sql = |template: &str, view: &str| template.replacen("{view}", &tables.of(view), 1);
    for upsert in [
        add_product_sales(sql(ADD_PRODUCT_SALES, "product_sales_view"), &deltas.products),
        add_category_metrics(sql(ADD_CATEGORY_METRICS, "category_metrics_view"), &deltas.categories),
        add_customer_ltv(sql(ADD_CUSTOMER_LTV, "customer_ltv_view"), &deltas.customers),
        add_hourly_sales(sql(ADD_HOURLY_SALES, "hourly_sales_view"), &deltas.hours),
        add_customer_categories(sql(ADD_CUSTOMER_CATEGORIES, "customer_category_view"), &deltas.customer_categories),
    ] {
        upsert.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One view's `insert … on conflict do update`, with its rows bound as arrays.
type Upsert<'a> = Query<'a, Postgres, PgArguments>;

// Each statement names its table `{view}`: the live view, or a rebuild's shadow of it.
const ADD_PRODUCT_SALES: &str = "
    insert into {view} as v (product_id, product_name, category, total_quantity_sold, total_revenue, order_count)
    select * from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::bigint[]) order by 1
    on conflict (product_id) do update set
        product_name = excluded.product_name,
        category = excluded.category,
        total_quantity_sold = v.total_quantity_sold + excluded.total_quantity_sold,
        total_revenue = v.total_revenue + excluded.total_revenue,
        order_count = v.order_count + excluded.order_count,
        updated_at = now()";

fn add_product_sales<'a>(sql: String, products: &'a BTreeMap<i64, ProductDelta<'a>>) -> Upsert<'a> {
    sqlx::query(AssertSqlSafe(sql))
        .bind(keys(products))
        .bind(column(products, |p| p.name))
        .bind(column(products, |p| p.category))
        .bind(column(products, |p| p.quantity))
        .bind(column(products, |p| p.revenue.amount()))
        .bind(column(products, |p| p.orders))
}

const ADD_CATEGORY_METRICS: &str = "
    insert into {view} as v (category, total_revenue, total_quantity, total_orders)
    select * from unnest($1::text[], $2::numeric[], $3::bigint[], $4::bigint[]) order by 1
    on conflict (category) do update set
        total_revenue = v.total_revenue + excluded.total_revenue,
        total_quantity = v.total_quantity + excluded.total_quantity,
        total_orders = v.total_orders + excluded.total_orders,
        updated_at = now()";

fn add_category_metrics<'a>(sql: String, categories: &'a BTreeMap<&'a str, CategoryDelta>) -> Upsert<'a> {
    sqlx::query(AssertSqlSafe(sql))
        .bind(keys(categories))
        .bind(column(categories, |c| c.revenue.amount()))
        .bind(column(categories, |c| c.quantity))
        .bind(column(categories, |c| c.orders))
}

const ADD_CUSTOMER_LTV: &str = "
    insert into {view} as v (customer_id, total_spent, order_count, first_order_at, last_order_at)
    select * from unnest($1::bigint[], $2::numeric[], $3::bigint[], $4::timestamptz[], $5::timestamptz[]) order by 1
    on conflict (customer_id) do update set
        total_spent = v.total_spent + excluded.total_spent,
        order_count = v.order_count + excluded.order_count,
        first_order_at = least(v.first_order_at, excluded.first_order_at),
        last_order_at = greatest(v.last_order_at, excluded.last_order_at),
        updated_at = now()";

fn add_customer_ltv<'a>(sql: String, customers: &'a BTreeMap<i64, CustomerDelta>) -> Upsert<'a> {
    sqlx::query(AssertSqlSafe(sql))
        .bind(keys(customers))
        .bind(column(customers, |c| c.spent.amount()))
        .bind(column(customers, |c| c.orders))
        .bind(column(customers, |c| c.first))
        .bind(column(customers, |c| c.last))
}

const ADD_HOURLY_SALES: &str = "
    insert into {view} as v (hour, order_count, items_sold, revenue)
    select * from unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::numeric[]) order by 1
    on conflict (hour) do update set
        order_count = v.order_count + excluded.order_count,
        items_sold = v.items_sold + excluded.items_sold,
        revenue = v.revenue + excluded.revenue,
        updated_at = now()";

fn add_hourly_sales<'a>(sql: String, hours: &'a BTreeMap<DateTime<Utc>, HourDelta>) -> Upsert<'a> {
    sqlx::query(AssertSqlSafe(sql))
        .bind(keys(hours))
        .bind(column(hours, |h| h.orders))
        .bind(column(hours, |h| h.items))
        .bind(column(hours, |h| h.revenue.amount()))
}

const ADD_CUSTOMER_CATEGORIES: &str = "
    insert into {view} as v (customer_id, category, total_revenue, total_quantity, order_count)
    select * from unnest($1::bigint[], $2::text[], $3::numeric[], $4::bigint[], $5::bigint[]) order by 1, 2
    on conflict (customer_id, category) do update set
        total_revenue = v.total_revenue + excluded.total_revenue,
        total_quantity = v.total_quantity + excluded.total_quantity,
        order_count = v.order_count + excluded.order_count,
        updated_at = now()";

fn add_customer_categories<'a>(sql: String, bought: &'a BTreeMap<(i64, &'a str), CustomerCategoryDelta>) -> Upsert<'a> {
    sqlx::query(AssertSqlSafe(sql))
        .bind(bought.keys().map(|(customer, _)| *customer).collect::<Vec<_>>())
        .bind(bought.keys().map(|(_, category)| *category).collect::<Vec<_>>())
        .bind(column(bought, |b| b.revenue.amount()))
        .bind(column(bought, |b| b.quantity))
        .bind(column(bought, |b| b.orders))
}

/// A map's keys as one array parameter, in key order.
fn keys<K: Copy, V>(map: &BTreeMap<K, V>) -> Vec<K> {
    map.keys().copied().collect()
}

/// One field of a map's values as one array parameter, in key order (so it lines up with [`keys`]).
fn column<K, V, T>(map: &BTreeMap<K, V>, field: impl Fn(&V) -> T) -> Vec<T> {
    map.values().map(field).collect()
}

/// The start of the UTC hour containing `at`.
fn utc_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use analytics_events::OrderLine;
    use chrono::TimeZone;

    use super::*;

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, hour, minute, 0).unwrap()
    }

    fn line(product_id: i64, category: &str, unit_price: &str, quantity: i64) -> OrderLine {
        OrderLine {
            product_id,
            product_name: format!("product {product_id}"),
            category: category.into(),
            unit_price: money(unit_price),
            quantity,
        }
    }

    fn order(order_id: i64, customer_id: i64, ordered_at: DateTime<Utc>, items: Vec<OrderLine>) -> OrderCreated {
        let total = items.iter().map(|i| i.unit_price * i.quantity).sum();
        OrderCreated { order_id, customer_id, ordered_at, total, items }
    }

    #[test]
    fn an_order_counts_once_per_category_however_many_of_its_lines_are_in_it() {
        let one =
            order(1, 9, at(10, 0), vec![line(1, "Books", "10", 2), line(2, "Books", "5", 1), line(3, "Toys", "1", 4)]);
        let deltas = fold(&[&one]);
        assert_eq!(deltas.categories["Books"], CategoryDelta { revenue: money("25"), quantity: 3, orders: 1 });
        assert_eq!(deltas.categories["Toys"], CategoryDelta { revenue: money("4"), quantity: 4, orders: 1 });
    }

    #[test]
    fn a_product_counts_the_distinct_orders_it_is_in_with_quantity_and_revenue() {
        let first = order(1, 9, at(10, 0), vec![line(1, "Books", "10.50", 2)]);
        let second = order(2, 8, at(10, 5), vec![line(1, "Books", "10.50", 3), line(2, "Toys", "1", 1)]);
        let deltas = fold(&[&first, &second]);
        let product = &deltas.products[&1];
        assert_eq!((product.quantity, product.revenue, product.orders), (5, money("52.50"), 2));
        assert_eq!((product.name, product.category), ("product 1", "Books"));
        assert_eq!(deltas.products[&2].orders, 1);
        assert_eq!(deltas.categories["Books"].orders, 2);
    }

    #[test]
    fn orders_fall_in_the_utc_hour_of_their_order_time() {
        let orders = [
            order(1, 1, at(10, 0), vec![line(1, "A", "1", 1)]),
            order(2, 2, at(10, 59), vec![line(1, "A", "1", 2), line(2, "B", "3", 1)]),
            order(3, 3, at(11, 0), vec![line(1, "A", "1", 1)]),
        ];
        let deltas = fold(&orders.iter().collect::<Vec<_>>());
        let hours: Vec<_> = deltas.hours.iter().map(|(hour, h)| (*hour, h.orders, h.items, h.revenue)).collect();
        assert_eq!(hours, [(at(10, 0), 2, 4, money("6")), (at(11, 0), 1, 1, money("1"))]);
    }

    #[test]
    fn a_customer_sums_its_orders_and_spans_first_to_last_whatever_the_batch_order() {
        let late = order(2, 7, at(12, 0), vec![line(1, "A", "2", 1)]);
        let early = order(1, 7, at(9, 30), vec![line(1, "A", "3", 1)]);
        let deltas = fold(&[&late, &early]);
        assert_eq!(
            deltas.customers[&7],
            CustomerDelta { spent: money("5"), orders: 2, first: at(9, 30), last: at(12, 0) }
        );
    }

    #[test]
    fn a_customer_counts_an_order_once_per_category_with_its_revenue_there() {
        let first = order(1, 7, at(9, 0), vec![line(1, "Books", "10", 2), line(2, "Books", "5", 1)]);
        let second = order(2, 7, at(9, 5), vec![line(3, "Books", "1", 1), line(4, "Toys", "2", 3)]);
        let other = order(3, 8, at(9, 9), vec![line(1, "Books", "10", 1)]);
        let deltas = fold(&[&first, &second, &other]);
        let bought: Vec<_> = deltas
            .customer_categories
            .iter()
            .map(|((c, cat), d)| (*c, *cat, d.revenue, d.quantity, d.orders))
            .collect();
        assert_eq!(
            bought,
            [(7, "Books", money("26"), 4, 2), (7, "Toys", money("6"), 3, 1), (8, "Books", money("10"), 1, 1)]
        );
    }

    #[test]
    fn an_empty_batch_changes_nothing() {
        assert_eq!(fold(&[]), Deltas::default());
    }

    #[test]
    fn hours_are_utc_hours_of_the_order_time() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 23, 59, 59).unwrap();
        assert_eq!(utc_hour(at), Utc.with_ymd_and_hms(2026, 11, 24, 23, 0, 0).unwrap());
    }
}
