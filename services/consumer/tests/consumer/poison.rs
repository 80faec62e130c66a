//! A message that can never be applied goes to the dead-letter queue with its reason, and the queue
//! keeps flowing behind it.

use std::time::Duration;

use analytics_events::{Envelope, EventType, OrderCreated, OrderLine};
use analytics_testkit::{amqp_url, eventually};
use chrono::Utc;
use futures::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions},
    types::AMQPValue,
};
use serde_json::json;

use crate::helpers::Pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_dead_lettered_with_their_reason_and_never_block_the_queue() {
    let pipeline = Pipeline::start(&amqp_url(), 1).await;
    let connection = analytics_kit::amqp::connect(&pipeline.amqp_url.as_str().into(), "poisoner").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let poison: [(&str, &[u8]); 3] = [
        ("order.created", b"{not json"),
        ("order.created", br#"{"eventId":"x","eventType":"OrderShipped","schemaVersion":1}"#),
        ("order.created", br#"{"eventId":"x","eventType":"OrderCreated","schemaVersion":9}"#),
    ];
    let order = |id: i64, category: &str, price: &str, quantity: i64| {
        let price = price.parse::<analytics_events::Money>().unwrap();
        Envelope::new(
            EventType::OrderCreated,
            Utc::now(),
            id,
            OrderCreated {
                order_id: id,
                customer_id: 1,
                ordered_at: Utc::now(),
                total: price,
                items: vec![OrderLine {
                    product_id: id,
                    product_name: "Crafted".into(),
                    category: category.into(),
                    unit_price: price,
                    quantity,
                }],
            },
        )
        .to_body()
    };
    // Beyond what the read model stores (numeric(20,2)), and so large that price × quantity overflows
    // the decimal type itself (it panicked the consumer, before): each dead-lettered alone, with its reason.
    let unstorable = order(999_997, "Home", "1e19", 1);
    let overflowing = order(999_998, "Home", "79228162514264337593543950335", 10);
    // Well-formed, but PostgreSQL's text cannot hold NUL: the database refuses it.
    let refused = order(999_999, "Ho\u{0}me", "1.00", 1);
    let crafted =
        [unstorable.as_slice(), overflowing.as_slice(), refused.as_slice()].map(|body| ("order.created", body));
    for (routing_key, body) in poison.into_iter().chain(crafted) {
        channel
            .basic_publish(
                pipeline.topology.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // A real order behind them is applied.
    let product = pipeline.create_product("Lamp", "Home", "4.00", 10).await;
    let (status, _) =
        pipeline.post("/api/orders", &json!({"customerId": 3, "items": [{"productId": product, "quantity": 2}]})).await;
    assert_eq!(status, 201);
    pipeline.wait_until_applied(Duration::from_secs(30)).await;
    let sales = pipeline.query(&format!("/api/analytics/products/{product}/sales")).await;
    assert_eq!(sales["totalRevenue"], 8);

    // The dead-letter queue's depth, whoever put the messages there, is what the alert watches.
    let metrics = pipeline.consumer_metrics[0].clone();
    eventually(Duration::from_secs(40), "the dead-letter depth in the consumer's metrics", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.lines().any(|line| line == "consumer_dead_letter_queue_messages 6").then_some(())
    })
    .await;

    let mut dead = channel
        .basic_consume(
            pipeline.topology.dead_letter_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 6 {
        let delivery =
            tokio::time::timeout(Duration::from_secs(20), dead.next()).await.expect("a dead letter").unwrap().unwrap();
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let kind = match headers.inner().get("x-poison-kind") {
            Some(AMQPValue::LongString(kind)) => kind.to_string(),
            other => panic!("no x-poison-kind header: {other:?}"),
        };
        assert!(
            matches!(headers.inner().get("x-dead-letter-reason"), Some(AMQPValue::LongString(reason)) if !reason.to_string().is_empty())
        );
        reasons.push(kind);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "amount_overflow",
            "amount_overflow",
            "invalid_json",
            "rejected_by_database",
            "unknown_event_type",
            "unsupported_schema_version"
        ]
    );
    let metrics = pipeline.client.get(&pipeline.consumer_metrics[0]).send().await.unwrap().text().await.unwrap();
    for expected in [
        "consumer_events_dead_lettered_total{reason=\"invalid_json\"} 1",
        "consumer_events_dead_lettered_total{reason=\"unknown_event_type\"} 1",
        "consumer_events_dead_lettered_total{reason=\"unsupported_schema_version\"} 1",
        "consumer_events_dead_lettered_total{reason=\"rejected_by_database\"} 1",
        "consumer_events_dead_lettered_total{reason=\"amount_overflow\"} 2",
        "consumer_events_applied_total{event_type=\"OrderCreated\"} 1",
        "consumer_events_applied_total{event_type=\"ProductCreated\"} 1",
        "consumer_batch_size_count",
        "consumer_apply_duration_seconds_count",
        "consumer_end_to_end_latency_seconds_count",
    ] {
        assert!(metrics.contains(expected), "the consumer's /metrics lacks {expected}:\n{metrics}");
    }
    // Every service metric the chart's dashboard and alert rules use exists in a real scrape.
    let mut scraped = metrics.clone();
    for url in &pipeline.service_metrics {
        scraped.push_str(&pipeline.client.get(url).send().await.unwrap().text().await.unwrap());
    }
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/analytics-pipeline");
    let used = std::fs::read_to_string(chart.join("dashboards/analytics-pipeline.json")).unwrap()
        + &std::fs::read_to_string(chart.join("templates/monitoring.yaml")).unwrap();
    let service_metrics: Vec<String> = analytics_operator::metric_names(&used)
        .into_iter()
        .filter(|name| ["http_", "outbox_", "consumer_"].iter().any(|prefix| name.starts_with(prefix)))
        .collect();
    assert!(service_metrics.len() >= 5, "{service_metrics:?}");
    for name in service_metrics {
        assert!(scraped.contains(&format!("\n{name}")), "no service exports {name}, which the chart uses");
    }
    eventually(Duration::from_secs(10), "the order queue to be empty", || async {
        let depth = pipeline.query("/api/analytics/sync-status").await["queueDepth"].as_i64();
        (depth == Some(0)).then_some(())
    })
    .await;
}
