//! The relay publishes every event exactly once in normal operation, at least once across a crash or a
//! stall, and two relays never publish the same row; what it has published leaves the outbox.

use std::{collections::HashMap, time::Duration};

use command_service::{
    config::RelayConfig,
    outbox::{BACKLOG_COUNTED, Backlog, Outbox, Publisher, Relay},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, database_config, read_at_least, read_exactly, relay_config, spawn_app};

fn event_ids(messages: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in messages {
        *counts.entry(message["eventId"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

/// The outbox as it stands: event id and body of every row, in id order.
async fn outbox_rows(app: &TestApp, event_type: &str) -> Vec<(String, String)> {
    sqlx::query_as("select event_id::text, body::text from outbox where event_type like $1 order by id")
        .bind(event_type)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// A relay of its own over the app's outbox, until the token is cancelled.
fn start_relay(app: &TestApp, config: &RelayConfig) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let relay = Relay::new(app.pool.clone(), config, &prometheus::Registry::new()).unwrap();
    (shutdown.clone(), tokio::spawn(relay.run(shutdown)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_published_exactly_once_with_its_exact_body_and_then_leaves_the_outbox() {
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
    let orders_written = outbox_rows(&app, "OrderCreated").await;
    let products_written = outbox_rows(&app, "Product%").await;
    assert_eq!((orders_written.len(), products_written.len()), (40, 3));

    let (shutdown, running) = start_relay(&app, &relay_config(&app.amqp_url, &app.prefix));
    let quiet = Duration::from_millis(800);
    let orders = read_exactly(&app.amqp_url, &app.topology.order_queue, 40, Duration::from_secs(20), quiet).await;
    let products = read_exactly(&app.amqp_url, &app.topology.product_queue, 3, Duration::from_secs(20), quiet).await;
    app.wait_until_outbox_drained(Duration::from_secs(5)).await;
    shutdown.cancel();
    running.await.unwrap();

    let published = event_ids(&orders);
    assert!(published.values().all(|n| *n == 1), "no duplicates");
    let mut got: Vec<_> = published.into_keys().collect();
    let mut expected: Vec<_> = orders_written.into_iter().map(|(id, _)| id).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    // The bytes on the wire are the bytes that were in the outbox (compared as canonical JSON, since the
    // queue reader parses them), in the order they were written.
    let canonical = |text: &str| serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
    let wire: Vec<String> = products.iter().map(|p| serde_json::to_string(p).unwrap()).collect();
    let stored: Vec<String> = products_written.iter().map(|(_, body)| canonical(body)).collect();
    assert_eq!(wire, stored);
    let types: Vec<_> = products.iter().map(|p| p["eventType"].as_str().unwrap()).collect();
    assert_eq!(types, ["ProductCreated", "ProductCreated", "ProductUpdated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_dies_between_publish_and_commit_is_followed_by_a_republish_not_a_loss() {
    let app = spawn_app().await;
    let product = app.create_product("Lamp", "Home", "1.00", 1000).await;
    for customer in 1..=30 {
        assert_eq!(
            app.post("/api/orders", json!({"customerId": customer, "items": [{"productId": product, "quantity": 1}]}))
                .await
                .0,
            201
        );
    }

    let written: Vec<String> = outbox_rows(&app, "%").await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(written.len(), 31);

    // The first relay claims a batch, publishes it, and dies before its commit: its transaction ends
    // with it, uncommitted.
    let mut config = relay_config(&app.amqp_url, &app.prefix);
    config.batch_size = 20;
    let doomed = Relay::new(app.pool.clone(), &config, &prometheus::Registry::new()).unwrap();
    let claim = doomed.claim().await.unwrap();
    assert_eq!(claim.events.len(), 20);
    let publisher =
        Publisher::connect(&app.amqp_url.as_str().into(), doomed.topology().clone(), config.confirm_timeout)
            .await
            .unwrap();
    publisher.publish(&claim.events).await.unwrap();
    let crashed: Vec<String> = claim.events.iter().map(|event| event.event_id.to_string()).collect();
    drop((claim, publisher, doomed));
    assert_eq!(app.count("outbox").await, 31, "every row is still there");

    // A healthy relay takes over at once: nothing waits for a lease to lapse.
    let (shutdown, running) = start_relay(&app, &config);
    app.wait_until_outbox_drained(Duration::from_secs(30)).await;
    shutdown.cancel();
    running.await.unwrap();

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
    assert_eq!(seen.len(), written.len(), "nothing but the outbox's events was published");
    for id in written {
        let expected = if crashed.contains(&id) { 2 } else { 1 };
        assert_eq!(seen.get(&id), Some(&expected), "event {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_in_parallel_never_publish_the_same_row_twice() {
    const EVENTS: usize = 3000;
    let app = spawn_app().await;
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
    let relays = [start_relay(&app, &config), start_relay(&app, &config)];
    let messages =
        read_exactly(&app.amqp_url, &app.topology.order_queue, EVENTS, Duration::from_secs(60), Duration::from_secs(1))
            .await;
    for (shutdown, running) in relays {
        shutdown.cancel();
        running.await.unwrap();
    }
    let counts = event_ids(&messages);
    assert_eq!(counts.len(), EVENTS, "every row was published");
    assert!(counts.values().all(|n| *n == 1), "no row was published twice");
    app.wait_until_outbox_drained(Duration::from_secs(5)).await;
}

/// A relay that stalls while it holds a claim (a frozen process, a lost network) cannot keep the rows:
/// PostgreSQL ends its idle transaction after the hold, the rows are claimable again, and the stalled
/// claim can no longer commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_held_past_its_time_is_ended_by_postgresql_and_its_rows_return() {
    let app = spawn_app().await;
    let product = app.create_product("Lamp", "Home", "1.00", 1000).await;
    for customer in 1..=10 {
        let order = json!({"customerId": customer, "items": [{"productId": product, "quantity": 1}]});
        assert_eq!(app.post("/api/orders", order).await.0, 201);
    }
    let outbox = Outbox::new(app.pool.clone());
    let stalled = outbox.claim(5, Duration::from_secs(2)).await.unwrap();
    assert_eq!(stalled.events.len(), 5);
    let others = outbox.claim(100, Duration::from_secs(2)).await.unwrap();
    assert_eq!(others.events.len(), 6, "the stalled claim's rows are skipped, not waited for");
    others.roll_back().await.unwrap();

    let returned = analytics_testkit::eventually(Duration::from_secs(30), "the stalled claim's rows", || async {
        let claim = outbox.claim(100, Duration::from_secs(2)).await.unwrap();
        if claim.events.len() == 11 {
            return Some(claim);
        }
        claim.roll_back().await.unwrap();
        None
    })
    .await;
    let error = stalled.commit().await.expect_err("PostgreSQL ended the stalled transaction");
    println!("the stalled claim's commit: {error}");
    returned.commit().await.unwrap();
    assert_eq!(app.count("outbox").await, 0);
}

/// The backlog is counted row by row up to `BACKLOG_COUNTED`, and past it bounded from above by the span
/// of ids, so that reading it never scans the table.
#[tokio::test]
async fn the_backlog_is_exact_up_to_its_count_and_an_upper_bound_past_it() {
    let app = spawn_app().await;
    let outbox = Outbox::new(app.pool.clone());
    assert_eq!(outbox.backlog().await.unwrap(), Backlog { pending: 0, oldest_pending_at: None });
    // Rows 1 to N, row n occurring n seconds into 2026.
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
    let rows = BACKLOG_COUNTED + 500;
    sqlx::query(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
         select gen_random_uuid(), 'OrderCreated', n, '{}', $2 + n * interval '1 second'
           from generate_series(1, $1) as n",
    )
    .bind(rows)
    .bind(start)
    .execute(&app.pool)
    .await
    .unwrap();
    let id = |n: i64| sqlx::query_scalar::<_, i64>("select id from outbox order by id offset $1 limit 1").bind(n - 1);
    let (first, last) = (id(1).fetch_one(&app.pool).await.unwrap(), id(rows).fetch_one(&app.pool).await.unwrap());
    // Gaps near the end, as ids of orders that never committed leave.
    sqlx::query("delete from outbox where id > $1 - 200 and id < $1").bind(last).execute(&app.pool).await.unwrap();
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!(backlog.pending, last - first + 1, "past the count: the span of ids");
    assert!(backlog.pending >= app.count("outbox").await, "an upper bound");
    assert_eq!(backlog.oldest_pending_at, Some(start + chrono::Duration::seconds(1)));

    // Below the count again: exact.
    sqlx::query("delete from outbox where id < $1 + 700").bind(first).execute(&app.pool).await.unwrap();
    let left = app.count("outbox").await;
    assert!(left <= BACKLOG_COUNTED, "{left} rows");
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!(backlog, Backlog { pending: left, oldest_pending_at: Some(start + chrono::Duration::seconds(701)) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_as_its_own_process_publishes_and_serves_health_and_metrics() {
    let app = spawn_app().await;
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
    let app = spawn_app().await;
    let id: i64 = sqlx::query_scalar(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at)
         values (gen_random_uuid(), 'Watermark', 0, '{}', now()) returning id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let relay =
        Relay::new(app.pool.clone(), &relay_config(&app.amqp_url, &app.prefix), &prometheus::Registry::new()).unwrap();
    let error = relay.claim().await.err().expect("the row is refused").to_string();
    assert!(error.contains(&format!("outbox row {id} holds \"Watermark\", which is not a domain event")), "{error}");
    assert_eq!(app.count("outbox").await, 1, "and stays for someone to look at");
}

/// One pass of pruning removes every expired idempotency key, however many (a fixed 10 000 a minute, 167
/// a second, fell behind a sustained 1 000 writes a second), and none that is recent.
#[tokio::test]
async fn one_pass_prunes_every_expired_idempotency_key() {
    let database_url = crate::helpers::fresh_database().await;
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    sqlx::raw_sql(
        "insert into idempotency_keys (scope, key, request_hash, response, created_at)
         select 'client', 'key-' || n, '\\x00', '{}', now() - interval '2 days' from generate_series(1, 12000) n;
         insert into idempotency_keys (scope, key, request_hash, response) values ('client', 'fresh', '\\x00', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let keys = command_service::store::idempotency::prune(&pool, command_service::store::idempotency::RETENTION).await;
    assert_eq!(keys, 12_000);
    let left: i64 = sqlx::query_scalar("select count(*) from idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 1);
}
