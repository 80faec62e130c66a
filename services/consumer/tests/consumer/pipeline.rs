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
        // A relay that publishes a batch and dies before committing its claim.
        let p = pipeline.lock().await;
        let doomed = Relay::new(p.write.clone(), &p.relay_config, &prometheus::Registry::new()).unwrap();
        let publisher =
            Publisher::connect(&p.amqp_url.as_str().into(), p.topology.clone(), Duration::from_secs(5)).await;
        if let (Ok(claim), Ok(publisher)) = (doomed.claim().await, publisher) {
            publisher.publish(&claim.events).await.unwrap();
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
        "select id, event_id, event_type, body::text, occurred_at from outbox_log order by id",
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
    let customers = analytics_testkit::assert_read_model_matches_write_side(
        &pipeline.client,
        &pipeline.write,
        &pipeline.read,
        &pipeline.query,
    )
    .await;
    assert!(customers > 100, "the check covered {customers} customers");

    let applied: i64 =
        sqlx::query_scalar("select count(*) from processed_events").fetch_one(&pipeline.read).await.unwrap();
    assert_eq!(applied, all.len() as i64, "every event was sent at least twice, yet applied once");
    drop(pipeline);
    drop(broker);
}
