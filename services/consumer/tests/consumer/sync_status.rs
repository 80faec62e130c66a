//! sync-status tells the truth: lag 0 when everything is applied, however long ago the last order;
//! at least the age of the oldest pending event while events wait; and growing while the broker is down.

use std::time::Duration;

use analytics_testkit::{PrivateBroker, amqp_url, eventually};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::helpers::Pipeline;

async fn place_orders(pipeline: &Pipeline, product: i64, count: usize) {
    for customer in 1..=count {
        let (status, body) = pipeline
            .post("/api/orders", &json!({"customerId": customer, "items": [{"productId": product, "quantity": 1}]}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_pipeline_reports_zero_lag_and_its_last_event_time() {
    let pipeline = Pipeline::start(&amqp_url(), 1).await;
    let product = pipeline.create_product("Lamp", "Home", "3.00", 100).await;
    place_orders(&pipeline, product, 5).await;
    pipeline.wait_until_applied(Duration::from_secs(30)).await;
    let newest: DateTime<Utc> =
        sqlx::query_scalar("select max(occurred_at) from outbox_log").fetch_one(&pipeline.write).await.unwrap();

    // Idle for longer than the watermark interval: the last event ages, the lag does not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = eventually(Duration::from_secs(10), "in_sync", || async {
        let status = pipeline.query("/api/analytics/sync-status").await;
        (status["status"] == "in_sync").then_some(status)
    })
    .await;
    assert_eq!(status["lagSeconds"], 0.0, "{status}");
    assert_eq!(status["pendingEvents"], 0, "{status}");
    assert_eq!(status["lastProcessedEventTimestamp"], analytics_events::timestamp::format(&newest), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_waiting_on_the_queue_are_counted_and_the_lag_covers_the_oldest() {
    let mut pipeline = Pipeline::start(&amqp_url(), 1).await;
    let product = pipeline.create_product("Lamp", "Home", "3.00", 100).await;
    pipeline.wait_until_applied(Duration::from_secs(30)).await;
    pipeline.wait_until_in_sync(Duration::from_secs(20)).await;
    pipeline.kill_all_consumers();

    place_orders(&pipeline, product, 20).await;
    let oldest: DateTime<Utc> =
        sqlx::query_scalar("select min(occurred_at) from outbox_log where event_type = 'OrderCreated'")
            .fetch_one(&pipeline.write)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = eventually(Duration::from_secs(10), "the orders on the queue", || async {
        let status = pipeline.query("/api/analytics/sync-status").await;
        (status["queueDepth"].as_i64().unwrap_or(0) >= 20).then_some(status)
    })
    .await;
    let age = (Utc::now() - oldest).as_seconds_f64();
    assert!(status["pendingEvents"].as_i64().unwrap() >= 20, "{status}");
    assert!(
        status["lagSeconds"].as_f64().unwrap() >= age - 0.05,
        "lag covers the oldest pending event ({age:.3} s): {status}"
    );
    assert_ne!(status["status"], "in_sync");

    pipeline.start_consumer();
    pipeline.wait_until_applied(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), "back in sync", || async {
        let status = pipeline.query("/api/analytics/sync-status").await;
        (status["status"] == "in_sync" && status["lagSeconds"] == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_the_broker_is_down_the_lag_grows_past_the_age_of_the_waiting_orders() {
    let broker = PrivateBroker::start();
    let pipeline = Pipeline::start(&broker.url(), 1).await;
    let product = pipeline.create_product("Lamp", "Home", "3.00", 100).await;
    pipeline.wait_until_applied(Duration::from_secs(30)).await;
    pipeline.wait_until_in_sync(Duration::from_secs(20)).await;

    broker.stop();
    place_orders(&pipeline, product, 5).await;
    let oldest: DateTime<Utc> =
        sqlx::query_scalar("select min(occurred_at) from outbox").fetch_one(&pipeline.write).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = pipeline.query("/api/analytics/sync-status").await;
    let age = (Utc::now() - oldest).as_seconds_f64();
    assert_eq!(status["status"], "stale", "{status}");
    assert!(status["lagSeconds"].as_f64().unwrap() >= age, "lag {status} vs oldest pending {age:.3} s");
    assert_eq!(status["queueDepth"], serde_json::Value::Null, "the broker is unreachable: {status}");
    // Five orders wait in the outbox; the last watermark saw none, and nothing newer can tell.
    assert_eq!(status["outboxPendingEvents"], serde_json::Value::Null, "not the last watermark's 0: {status}");
    assert_eq!(status["pendingEvents"], serde_json::Value::Null, "{status}");

    broker.start_again();
    pipeline.wait_until_applied(Duration::from_secs(60)).await;
    eventually(Duration::from_secs(20), "back in sync", || async {
        let status = pipeline.query("/api/analytics/sync-status").await;
        (status["status"] == "in_sync").then_some(())
    })
    .await;
    drop(pipeline);
    drop(broker);
}
