//! The whole pipeline under a burst of concurrent orders, with crashes and outages, must end with every
//! figure of every view equal to what SQL computes from the write database.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use analytics_testkit::{PrivateBroker, eventually};
use command_service::outbox::{OutboxEvent, Publisher, Relay};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::helpers::Pipeline;

const ORDERS: usize = 2500;
const CLIENTS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_view_equals_the_write_side_after_a_burst_with_crashes_outages_and_duplicates() {
    let broker = PrivateBroker::start();
    let pipeline = Pipeline::start(&broker.url(), 2).await;

    let categories = ["Home", "Kitchen", "Garden", "Toys", "Books", "Paper", "Audio", "Sport"];
    let mut rng = StdRng::seed_from_u64(7);
    let mut products = Vec::new();
    for i in 0..40 {
        let price = format!("{}.{:02}", rng.random_range(0..60), rng.random_range(1..100));
        let stock = rng.random_range(40..400);
        products.push(
            pipeline.create_product(&format!("Product {i}"), categories[i % categories.len()], &price, stock).await,
        );
    }

    // The burst: concurrent clients, random multi-item orders, overlapping customers and products.
    let attempts = Arc::new(AtomicUsize::new(0));
    let milestone = Arc::new(Notify::new());
    let pipeline = Arc::new(tokio::sync::Mutex::new(pipeline));
    let (command, client) = {
        let p = pipeline.lock().await;
        (p.command.clone(), p.client.clone())
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            let (attempts, milestone, products, command, client) =
                (attempts.clone(), milestone.clone(), products.clone(), command.clone(), client.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed as u64 + 100);
                let mut statuses = BTreeMap::<u16, usize>::new();
                while attempts.fetch_add(1, Ordering::SeqCst) < ORDERS {
                    let count = rng.random_range(1..=4);
                    let items: Vec<Value> = products
                        .choose_multiple(&mut rng, count)
                        .map(|id| json!({"productId": id, "quantity": rng.random_range(1..=5)}))
                        .collect();
                    let body = json!({"customerId": rng.random_range(1..=300), "items": items});
                    let response = client.post(format!("{command}/api/orders")).json(&body).send().await.unwrap();
                    *statuses.entry(response.status().as_u16()).or_default() += 1;
                    milestone.notify_waiters();
                }
                statuses
            })
        })
        .collect();

    // Faults, at points in the burst.
    let reached = |n: usize| {
        let (attempts, milestone) = (attempts.clone(), milestone.clone());
        async move {
            while attempts.load(Ordering::SeqCst) < n {
                tokio::time::timeout(Duration::from_millis(50), milestone.notified()).await.ok();
            }
        }
    };
    reached(ORDERS / 5).await;
    {
        let mut p = pipeline.lock().await;
        p.kill_consumer();
        p.start_consumer();
    }
    reached(2 * ORDERS / 5).await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.start_again();
    reached(3 * ORDERS / 5).await;
    {
        // A relay that publishes a batch and dies before marking it.
        let p = pipeline.lock().await;
        let doomed = Relay::new(&p.relay_config, &prometheus::Registry::new()).unwrap();
        let publisher = Publisher::connect(&p.relay_config.amqp_url, p.topology.clone(), Duration::from_secs(5)).await;
        if let (Ok(batch), Ok(publisher)) = (doomed.claim().await, publisher) {
            publisher.publish(&batch).await.unwrap();
        }
    }
    reached(4 * ORDERS / 5).await;
    pipeline.lock().await.kill_consumer();

    let mut statuses = BTreeMap::<u16, usize>::new();
    for client in clients {
        for (status, n) in client.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    let mut pipeline = Arc::into_inner(pipeline).unwrap().into_inner();
    pipeline.start_consumer();
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [201, 409],
        "only successes and stock conflicts: {statuses:?}"
    );
    assert!(statuses[&201] > ORDERS / 3 && statuses[&409] > 0, "{statuses:?}");

    // Every message once more: a full duplicate delivery.
    let all: Vec<OutboxEvent> = sqlx::query_as::<_, (i64, uuid::Uuid, String, String, chrono::DateTime<chrono::Utc>)>(
        "select id, event_id, event_type, body::text, occurred_at from outbox order by id",
    )
    .fetch_all(&pipeline.write)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, event_id, event_type, body, occurred_at)| OutboxEvent {
        id,
        event_id,
        event_type: analytics_events::EventType::parse(&event_type).unwrap(),
        body: body.into_bytes(),
        occurred_at,
    })
    .collect();
    let publisher =
        Publisher::connect(&pipeline.amqp_url.as_str().into(), pipeline.topology.clone(), Duration::from_secs(10))
            .await
            .unwrap();
    for chunk in all.chunks(500) {
        publisher.publish(chunk).await.unwrap();
    }
    publisher.close().await;

    pipeline.wait_until_applied(Duration::from_secs(120)).await;
    eventually(Duration::from_secs(60), "sync-status in_sync with nothing pending", || async {
        let status = pipeline.query("/api/analytics/sync-status").await;
        (status["status"] == "in_sync" && status["pendingEvents"] == 0 && status["lagSeconds"] == 0.0).then_some(())
    })
    .await;
    assert_views_match_the_write_side(&pipeline).await;

    let duplicates: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&pipeline.write).await.unwrap();
    assert_eq!(all.len() as i64, duplicates, "every event was sent at least twice, yet applied once");
    drop(pipeline);
    drop(broker);
}

/// Every product, category, customer and hour, through the query API (and the hourly view), against SQL
/// over the write database.
pub async fn assert_views_match_the_write_side(pipeline: &Pipeline) {
    let products: Vec<(i64, i64, Decimal, i64)> = sqlx::query_as(
        "select p.id, coalesce(sum(i.quantity), 0)::bigint, coalesce(sum(i.quantity * i.unit_price), 0), count(distinct i.order_id)
           from products p left join order_items i on i.product_id = p.id group by p.id order by p.id",
    )
    .fetch_all(&pipeline.write)
    .await
    .unwrap();
    for (id, quantity, revenue, orders) in products {
        let sales = pipeline.query(&format!("/api/analytics/products/{id}/sales")).await;
        assert_eq!(
            (sales["totalQuantitySold"].as_i64(), money(&sales["totalRevenue"]), sales["orderCount"].as_i64()),
            (Some(quantity), revenue.normalize(), Some(orders)),
            "product {id}"
        );
    }

    let categories: Vec<(String, Decimal, i64)> = sqlx::query_as(
        "select p.category, coalesce(sum(i.quantity * i.unit_price), 0), count(distinct i.order_id)
           from products p left join order_items i on i.product_id = p.id group by p.category order by 1",
    )
    .fetch_all(&pipeline.write)
    .await
    .unwrap();
    for (category, revenue, orders) in categories {
        let metrics = pipeline.query(&format!("/api/analytics/categories/{category}/revenue")).await;
        assert_eq!(
            (money(&metrics["totalRevenue"]), metrics["totalOrders"].as_i64()),
            (revenue.normalize(), Some(orders)),
            "category {category}"
        );
    }

    let customers: Vec<(i64, Decimal, i64, String)> = sqlx::query_as(
        "select customer_id, sum(total), count(*), to_char(max(created_at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
           from orders group by customer_id order by 1",
    )
    .fetch_all(&pipeline.write)
    .await
    .unwrap();
    assert!(customers.len() > 100);
    for (customer, spent, orders, last) in customers {
        let value = pipeline.query(&format!("/api/analytics/customers/{customer}/lifetime-value")).await;
        assert_eq!(
            (money(&value["totalSpent"]), value["orderCount"].as_i64(), value["lastOrderDate"].as_str()),
            (spent.normalize(), Some(orders), Some(last.as_str())),
            "customer {customer}"
        );
    }

    let expected_hours: Vec<(chrono::DateTime<chrono::Utc>, i64, i64, Decimal)> = sqlx::query_as(
        "with per_order as (
             select date_trunc('hour', o.created_at, 'UTC') as hour, o.total,
                    (select sum(quantity) from order_items i where i.order_id = o.id) as items
               from orders o)
         select hour, count(*), sum(items)::bigint, sum(total) from per_order group by hour order by hour",
    )
    .fetch_all(&pipeline.write)
    .await
    .unwrap();
    let hours: Vec<(chrono::DateTime<chrono::Utc>, i64, i64, Decimal)> =
        sqlx::query_as("select hour, order_count, items_sold, revenue from hourly_sales_view order by hour")
            .fetch_all(&pipeline.read)
            .await
            .unwrap();
    assert_eq!(hours, expected_hours);
}

fn money(value: &Value) -> Decimal {
    value.to_string().parse::<Decimal>().unwrap_or_else(|_| panic!("not a decimal: {value}")).normalize()
}
