//! The relay publishes every event exactly once in normal operation, at least once across a crash, and
//! two relays never publish the same row.

use std::{collections::HashMap, time::Duration};

use command_service::{
    config::RelayConfig,
    outbox::{Publisher, Relay},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Options, TestApp, database_config, read_at_least, read_exactly, relay_config, spawn_app, spawn_app_with,
};

fn event_ids(messages: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in messages {
        *counts.entry(message["eventId"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

async fn outbox_event_ids(app: &TestApp, event_type: &str) -> Vec<String> {
    sqlx::query_scalar("select event_id::text from outbox where event_type = $1 order by id")
        .bind(event_type)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_published_exactly_once_with_its_exact_body() {
    let app = spawn_app().await;
    let lamp = app.create_product("Lamp", "Home", "49.99", 1000).await;
    let mug = app.create_product("Mug", "Kitchen", "8.50", 1000).await;
    app.patch(&format!("/api/products/{mug}"), json!({"price": 9.00})).await;
    for customer in 1..=40 {
        let (status, _) = app
            .post("/api/orders", json!({"customerId": customer, "items": [{"productId": lamp, "quantity": 1}, {"productId": mug, "quantity": 2}]}))
            .await;
        assert_eq!(status, 201);
    }

    let quiet = Duration::from_millis(800);
    let orders = read_exactly(&app.amqp_url, &app.topology.order_queue, 40, Duration::from_secs(20), quiet).await;
    let products = read_exactly(&app.amqp_url, &app.topology.product_queue, 3, Duration::from_secs(20), quiet).await;

    let published = event_ids(&orders);
    assert!(published.values().all(|n| *n == 1), "no duplicates");
    let mut expected = outbox_event_ids(&app, "OrderCreated").await;
    let mut got: Vec<_> = published.into_keys().collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    // The bytes on the wire are the bytes in the outbox.
    let stored: Vec<String> =
        sqlx::query_scalar("select body::text from outbox where event_type like 'Product%' order by id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let wire: Vec<String> = products.iter().map(|p| serde_json::to_string(p).unwrap()).collect();
    let stored: Vec<String> =
        stored.iter().map(|s| serde_json::to_string(&serde_json::from_str::<Value>(s).unwrap()).unwrap()).collect();
    assert_eq!(wire.iter().filter(|w| stored.contains(w)).count(), 3);
    let types: Vec<_> = products.iter().map(|p| p["eventType"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "ProductUpdated").count(), 1);

    app.wait_until_outbox_drained(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_dies_between_publish_and_mark_is_followed_by_a_republish_not_a_loss() {
    let app = spawn_app_with(Options { relay: false, ..Options::default() }).await;
    let product = app.create_product("Lamp", "Home", "1.00", 1000).await;
    for customer in 1..=30 {
        assert_eq!(
            app.post("/api/orders", json!({"customerId": customer, "items": [{"productId": product, "quantity": 1}]}))
                .await
                .0,
            201
        );
    }

    // The first relay claims a batch, publishes it, and dies before marking it.
    let mut config = relay_config(&app.amqp_url, &app.prefix);
    config.lease = Duration::from_secs(1);
    config.batch_size = 20;
    let doomed = Relay::new(app.pool.clone(), &config, &prometheus::Registry::new()).unwrap();
    let batch = doomed.claim().await.unwrap();
    assert_eq!(batch.len(), 20);
    let publisher =
        Publisher::connect(&app.amqp_url.as_str().into(), doomed.topology().clone(), config.confirm_timeout)
            .await
            .unwrap();
    publisher.publish(&batch).await.unwrap();
    drop(publisher);
    drop(doomed);
    let unmarked: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(unmarked, 31, "nothing was marked published");

    // A healthy relay takes over once the lease has lapsed.
    let survivor = Relay::new(app.pool.clone(), &config, &prometheus::Registry::new()).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(survivor.run(shutdown.clone()));
    app.wait_until_outbox_drained(Duration::from_secs(30)).await;
    shutdown.cancel();
    running.await.unwrap();

    let crashed: Vec<String> = batch.iter().map(|event| event.event_id.to_string()).collect();
    let orders = read_exactly(
        &app.amqp_url,
        &app.topology.order_queue,
        30 + 19,
        Duration::from_secs(20),
        Duration::from_millis(800),
    )
    .await;
    let products = read_at_least(
        &app.amqp_url,
        &app.topology.product_queue,
        1,
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .await;
    let mut seen = event_ids(&orders);
    for (id, n) in event_ids(&products) {
        *seen.entry(id).or_default() += n;
    }
    for id in
        outbox_event_ids(&app, "OrderCreated").await.into_iter().chain(outbox_event_ids(&app, "ProductCreated").await)
    {
        let expected = if crashed.contains(&id) { 2 } else { 1 };
        assert_eq!(seen.get(&id), Some(&expected), "event {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_in_parallel_never_publish_the_same_row_twice() {
    const EVENTS: usize = 3000;
    let app = spawn_app_with(Options { relay: false, ..Options::default() }).await;
    sqlx::query(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
         select id, 'OrderCreated', n, json_build_object('eventId', id, 'n', n), now()
           from (select gen_random_uuid() as id, n from generate_series(1, $1) as n) as rows",
    )
    .bind(i32::try_from(EVENTS).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();

    let mut config = relay_config(&app.amqp_url, &app.prefix);
    config.batch_size = 25;
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(
                Relay::new(app.pool.clone(), &config, &prometheus::Registry::new()).unwrap().run(shutdown.clone()),
            )
        })
        .collect();
    let messages =
        read_exactly(&app.amqp_url, &app.topology.order_queue, EVENTS, Duration::from_secs(60), Duration::from_secs(1))
            .await;
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    let counts = event_ids(&messages);
    assert_eq!(counts.len(), EVENTS, "every row was published");
    assert!(counts.values().all(|n| *n == 1), "no row was published twice");
    app.wait_until_outbox_drained(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_rows_are_pruned_after_the_retention_period_and_unpublished_ones_never() {
    let app = spawn_app_with(Options { retention: Duration::from_millis(1), ..Options::default() }).await;
    app.create_product("Lamp", "Home", "1.00", 10).await;
    app.wait_until_outbox_drained(Duration::from_secs(20)).await;
    // An old row that was never published must survive pruning.
    sqlx::query(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at, claimed_until)
         values (gen_random_uuid(), 'OrderCreated', 1, '{}', now() - interval '2 days', now() + interval '1 hour')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // The relay prunes when it starts and every minute after: restart it to trigger a pass.
    let config = relay_config(&app.amqp_url, &app.prefix);
    let relay = Relay::new(
        app.pool.clone(),
        &RelayConfig { retention: Duration::from_millis(1), ..config },
        &prometheus::Registry::new(),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    analytics_testkit::eventually(Duration::from_secs(10), "the published row to be pruned", || async {
        let published: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is not null")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (published == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(app.count("outbox").await, 1, "the unpublished row stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_as_its_own_process_publishes_and_serves_health_and_metrics() {
    let app = spawn_app_with(Options { relay: false, ..Options::default() }).await;
    app.create_product("Lamp", "Home", "1.00", 10).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = command_service::config::RelayProcessConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        database: database_config(&app.database_url),
        relay: relay_config(&app.amqp_url, &app.prefix),
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(command_service::app::run_relay(config, shutdown.clone()));

    app.wait_until_outbox_drained(Duration::from_secs(20)).await;
    let products = read_exactly(
        &app.amqp_url,
        &app.topology.product_queue,
        1,
        Duration::from_secs(10),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(products[0]["payload"]["name"], "Lamp");
    let base = format!("http://127.0.0.1:{port}");
    let ready: Value = app.client.get(format!("{base}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["checks"]["database"].as_str()),
        (Some("ready"), Some("ok")),
        "{ready}"
    );
    let metrics = app.client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("outbox_published_total{event_type=\"ProductCreated\"} 1"), "{metrics}");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_that_is_not_a_domain_event_is_reported_with_its_id_and_never_sent() {
    let app = spawn_app_with(Options { relay: false, ..Options::default() }).await;
    let id: i64 = sqlx::query_scalar(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
         values (gen_random_uuid(), 'Watermark', 0, '{}', now()) returning id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let relay =
        Relay::new(app.pool.clone(), &relay_config(&app.amqp_url, &app.prefix), &prometheus::Registry::new()).unwrap();
    let error = relay.claim().await.unwrap_err().to_string();
    assert!(error.contains(&format!("outbox row {id} holds \"Watermark\", which is not a domain event")), "{error}");
}

/// One pass of pruning removes every published row past retention, however many (a fixed 10 000 a
/// minute, 167 a second, fell behind a sustained 1 000 events a second), and nothing unpublished or
/// recent; expired idempotency keys go the same way.
#[tokio::test]
async fn one_pass_prunes_every_expired_outbox_row_and_idempotency_key() {
    let database_url = crate::helpers::fresh_database().await;
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    sqlx::raw_sql(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at, published_at)
         select gen_random_uuid(), 'OrderCreated', n, '{}', now() - interval '3 days', now() - interval '2 days'
           from generate_series(1, 25000) n;
         insert into outbox (event_id, event_type, aggregate_id, body, occurred_at, published_at)
         select gen_random_uuid(), 'OrderCreated', n, '{}', now(), case when n % 2 = 0 then now() end
           from generate_series(1, 10) n;
         insert into idempotency_keys (scope, key, request_hash, response, created_at)
         select 'client', 'key-' || n, '\\x00', '{}', now() - interval '2 days' from generate_series(1, 12000) n;
         insert into idempotency_keys (scope, key, request_hash, response) values ('client', 'fresh', '\\x00', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let pruned = command_service::outbox::Outbox::new(pool.clone()).prune(Duration::from_secs(24 * 3600)).await;
    println!("pruned {pruned} outbox rows in {:?}", started.elapsed());
    assert_eq!(pruned, 25_000);
    let left: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 10, "unpublished and recent rows stay");
    let keys = command_service::store::idempotency::prune(&pool, command_service::store::idempotency::RETENTION).await;
    assert_eq!(keys, 12_000);
    let left: i64 = sqlx::query_scalar("select count(*) from idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 1);
}
