//! The projection on its own, against a real read database: idempotency, out-of-order product events,
//! and concurrent batches over the same rows.

use analytics_events::{Envelope, EventType, OrderCreated, OrderLine, ProductState};
use analytics_testkit::fresh_database;
use chrono::Utc;
use consumer_service::{
    MIGRATOR,
    projection::{self, Incoming, Outcome, Stream},
};
use rust_decimal::Decimal;
use sqlx::PgPool;

fn order(id: i64, customer: i64, lines: &[(i64, &str, &str, i64)]) -> Incoming {
    let items: Vec<OrderLine> = lines
        .iter()
        .map(|(product_id, category, price, quantity)| OrderLine {
            product_id: *product_id,
            product_name: format!("product {product_id}"),
            category: (*category).into(),
            unit_price: price.parse().unwrap(),
            quantity: *quantity,
        })
        .collect();
    let total = items.iter().map(|item| item.unit_price * item.quantity).sum();
    let at = analytics_events::timestamp::truncate(Utc::now());
    let body = Envelope::new(
        EventType::OrderCreated,
        at,
        id,
        OrderCreated { order_id: id, customer_id: customer, ordered_at: at, total, items },
    )
    .to_body();
    projection::parse(&body, Stream::Orders).unwrap()
}

async fn product_sales(pool: &PgPool, id: i64) -> (i64, Decimal, i64) {
    sqlx::query_as(
        "select total_quantity_sold, total_revenue, order_count from product_sales_view where product_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_redelivered_message_changes_nothing_even_within_one_batch() {
    let pool = PgPool::connect(&fresh_database(&MIGRATOR).await).await.unwrap();
    let first = order(1, 10, &[(1, "Home", "2.50", 2)]);
    let second = order(2, 10, &[(1, "Home", "2.50", 1)]);

    let outcomes =
        projection::apply(&pool, Stream::Orders, &[first.clone(), first.clone(), second.clone()]).await.unwrap();
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Duplicate, Outcome::Applied]);
    let outcomes = projection::apply(&pool, Stream::Orders, &[second, first]).await.unwrap();
    assert_eq!(outcomes, [Outcome::Duplicate, Outcome::Duplicate]);

    assert_eq!(product_sales(&pool, 1).await, (3, Decimal::new(750, 2), 2));
    let (spent, orders): (Decimal, i64) =
        sqlx::query_as("select total_spent, order_count from customer_ltv_view where customer_id = 10")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((spent, orders), (Decimal::new(750, 2), 2));
    let hashes: i64 = sqlx::query_scalar("select count(*) from processed_events").fetch_one(&pool).await.unwrap();
    assert_eq!(hashes, 2);
}

#[tokio::test]
async fn the_product_replica_keeps_the_newest_version_whatever_the_arrival_order() {
    let pool = PgPool::connect(&fresh_database(&MIGRATOR).await).await.unwrap();
    let event = |version: i64, price: &str| {
        let payload = ProductState {
            product_id: 9,
            name: "Mug".into(),
            category: "Kitchen".into(),
            price: price.parse().unwrap(),
            stock: 1,
            version,
        };
        let event_type = if version == 1 { EventType::ProductCreated } else { EventType::ProductUpdated };
        projection::parse(&Envelope::new(event_type, Utc::now(), 9, payload).to_body(), Stream::Products).unwrap()
    };
    projection::apply(&pool, Stream::Products, &[event(3, "7.00")]).await.unwrap();
    projection::apply(&pool, Stream::Products, &[event(1, "9.00"), event(2, "8.00")]).await.unwrap();
    let (price, version): (Decimal, i64) =
        sqlx::query_as("select price, version from products where id = 9").fetch_one(&pool).await.unwrap();
    assert_eq!((price, version), (Decimal::new(700, 2), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_over_the_same_rows_neither_deadlock_nor_lose_updates() {
    let pool = PgPool::connect(&fresh_database(&MIGRATOR).await).await.unwrap();
    // Eight writers; each batch touches products 1..=5 and categories A, B in a different order.
    let tasks: Vec<_> = (0..8)
        .map(|writer| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for round in 0..25_usize {
                    let base = i64::try_from(writer * 1000 + round * 10).unwrap();
                    let mut lines = vec![
                        (1, "A", "1.00", 1),
                        (2, "B", "1.00", 1),
                        (3, "A", "1.00", 1),
                        (4, "B", "1.00", 1),
                        (5, "A", "1.00", 1),
                    ];
                    lines.rotate_left((writer + round) % 5);
                    if writer % 2 == 1 {
                        lines.reverse();
                    }
                    let batch: Vec<_> = (0..4).map(|i| order(base + i, base % 7 + 1, &lines)).collect();
                    projection::apply(&pool, Stream::Orders, &batch).await.expect("no deadlock, no error");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let orders: i64 = 8 * 25 * 4;
    for product in 1..=5 {
        assert_eq!(product_sales(&pool, product).await, (orders, Decimal::from(orders), orders));
    }
    let category_orders: Vec<i64> =
        sqlx::query_scalar("select total_orders from category_metrics_view order by category")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(category_orders, [orders, orders]);
}
