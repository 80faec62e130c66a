//! Consumers stopped again and again in the middle of a backlog, as restarts and scale-downs stop them,
//! return nothing to the queue: no valid event comes near the delivery limit, none is dead-lettered, and
//! each is applied once.

use std::time::Duration;

use analytics_events::{Envelope, EventType, Money, OrderCreated, OrderLine, Topology};
use analytics_testkit::{amqp_url, eventually};
use chrono::Utc;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};

use crate::helpers::Pipeline;

const EVENTS: i64 = 5_000;
const RESTARTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_stopped_again_and_again_during_a_backlog_dead_letter_nothing_and_apply_each_event_once() {
    assert!(RESTARTS > Topology::DELIVERY_LIMIT as usize, "more stops than the limit allows returns");
    let mut pipeline = Pipeline::start(&amqp_url(), 0).await;
    let connection = analytics_kit::amqp::connect(&pipeline.amqp_url.as_str().into(), "backlog").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let price: Money = "2.50".parse().unwrap();
    for order_id in 1..=EVENTS {
        let created = OrderCreated {
            order_id,
            customer_id: order_id % 97 + 1,
            ordered_at: Utc::now(),
            total: price,
            items: vec![OrderLine {
                product_id: order_id % 5 + 1,
                product_name: "Lamp".into(),
                category: "Home".into(),
                unit_price: price,
                quantity: 1,
            }],
        };
        let body = Envelope::new(EventType::OrderCreated, Utc::now(), order_id, created).to_body();
        channel
            .basic_publish(
                pipeline.topology.exchange.as_str().into(),
                "order.created".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
    }
    let read = pipeline.read.clone();
    let applied =
        async || -> i64 { sqlx::query_scalar("select count(*) from processed_events").fetch_one(&read).await.unwrap() };
    // Each consumer is stopped (SIGTERM, as Kubernetes stops a pod) as soon as it has applied something,
    // with most of its prefetch still in hand: one message per transaction, 200 prefetched. A consumer
    // that returned what it holds would hand the same messages to the next one, again and again.
    let mut before = 0;
    for round in 0..RESTARTS {
        pipeline.start_consumer_with_batch_size(1);
        eventually(Duration::from_secs(30), "the consumer applies something", || async {
            (applied().await > before).then_some(())
        })
        .await;
        pipeline.stop_consumer();
        // What it had in hand when it was stopped is applied too.
        before = applied().await;
        println!("round {round}: {before} of {EVENTS} applied");
    }
    assert!(before < EVENTS, "the backlog was gone before the last stop; the test proves nothing");

    pipeline.start_consumer();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let dead_letters = async || -> i64 {
        let queue = pipeline.topology.dead_letter_queue.as_str();
        let declared = channel.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap();
        i64::from(declared.message_count())
    };
    let (applied, dead) = eventually(Duration::from_secs(120), "every event applied or dead-lettered", || async {
        let (applied, dead) = (applied().await, dead_letters().await);
        (applied + dead == EVENTS).then_some((applied, dead))
    })
    .await;
    assert_eq!((applied, dead), (EVENTS, 0), "valid events were dead-lettered");
    let (orders, revenue): (i64, rust_decimal::Decimal) =
        sqlx::query_as("select sum(order_count)::bigint, sum(total_revenue) from product_sales_view")
            .fetch_one(&pipeline.read)
            .await
            .unwrap();
    assert_eq!(orders, EVENTS, "each order counted once");
    assert_eq!(revenue, rust_decimal::Decimal::new(250, 2) * rust_decimal::Decimal::from(EVENTS));
}
