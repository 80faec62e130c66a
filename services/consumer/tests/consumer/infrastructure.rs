//! A failure of the read database that is not the message's fault (here: the server turned read-only,
//! as after a failover) holds the messages back until it passes; none is dead-lettered.

use std::time::Duration;

use analytics_testkit::{HangingProxy, amqp_url, eventually};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use serde_json::json;

use crate::helpers::Pipeline;

/// Sets the read database's default transaction mode and ends the consumer's sessions, so that its
/// next ones start in that mode. On a session of its own that is read-write whatever the default, as a
/// pooled one opened meanwhile would be read-only.
async fn read_only(pipeline: &Pipeline, on: bool) {
    use sqlx::{ConnectOptions, postgres::PgConnectOptions};
    let options: PgConnectOptions = pipeline.read_url.parse().unwrap();
    let mut admin = options.options([("default_transaction_read_only", "off")]).connect().await.unwrap();
    let database: String = sqlx::query_scalar("select current_database()").fetch_one(&mut admin).await.unwrap();
    let mode = if on { "on" } else { "off" };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("alter database {database} set default_transaction_read_only = {mode}")))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = 'consumer-service'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
}

async fn dead_letters(pipeline: &Pipeline) -> u32 {
    let connection = analytics_kit::amqp::connect(&pipeline.amqp_url.as_str().into(), "dlq depth").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let queue = channel
        .queue_declare(pipeline.topology.dead_letter_queue.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap();
    queue.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_database_holds_events_back_and_dead_letters_none() {
    let pipeline = Pipeline::start(&amqp_url(), 1).await;
    let product = pipeline.create_product("Lamp", "Home", "2.00", 100).await;
    pipeline.wait_until_applied(Duration::from_secs(30)).await;

    read_only(&pipeline, true).await;
    for customer in 1..=5 {
        let order = json!({"customerId": customer, "items": [{"productId": product, "quantity": 1}]});
        assert_eq!(pipeline.post("/api/orders", &order).await.0, 201);
    }
    // Long enough for the old code to refuse the batch, try each message three times and dead-letter it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let applied: i64 = sqlx::query_scalar("select coalesce(sum(order_count), 0)::bigint from product_sales_view")
        .fetch_one(&pipeline.read)
        .await
        .unwrap();
    assert_eq!(applied, 0, "nothing can be written yet");
    assert_eq!(dead_letters(&pipeline).await, 0, "a read-only database is not the events' fault");

    read_only(&pipeline, false).await;
    pipeline.wait_until_applied(Duration::from_secs(60)).await;
    eventually(Duration::from_secs(30), "the five orders applied", || async {
        let sales = pipeline.query(&format!("/api/analytics/products/{product}/sales")).await;
        (sales["orderCount"] == 5).then_some(())
    })
    .await;
    assert_eq!(dead_letters(&pipeline).await, 0);
}

/// SIGTERM while the broker has stopped answering (a dead network path: no reset, no reply, so closing
/// the connection would wait forever): the consumer still exits, within its stop budget, and cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_stops_on_sigterm_even_when_the_broker_hangs() {
    let mut pipeline = Pipeline::start(&amqp_url(), 0).await;
    let (proxy, through) = HangingProxy::in_front_of(&pipeline.amqp_url).await;
    pipeline.start_consumer_through(&through);
    let product = pipeline.create_product("Lamp", "Home", "2.00", 100).await;
    let order = json!({"customerId": 1, "items": [{"productId": product, "quantity": 1}]});
    assert_eq!(pipeline.post("/api/orders", &order).await.0, 201);
    pipeline.wait_until_applied(Duration::from_secs(30)).await;

    proxy.hang();
    pipeline.stop_consumer();
}

/// A consumer that stops as a rollout stops it, with nothing wrong anywhere, says so at info level: not
/// one ERROR or WARN line (lapin used to report its own channels' close as a connection error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_stop_logs_no_error_or_warning() {
    let mut pipeline = Pipeline::start(&amqp_url(), 0).await;
    pipeline.start_consumer();
    let product = pipeline.create_product("Lamp", "Home", "2.00", 100).await;
    let order = json!({"customerId": 1, "items": [{"productId": product, "quantity": 1}]});
    assert_eq!(pipeline.post("/api/orders", &order).await.0, 201);
    pipeline.wait_until_applied(Duration::from_secs(30)).await;

    let logged = pipeline.stop_consumer();
    assert!(logged.contains("consumer stopped"), "{logged}");
    assert_eq!(logged.matches("consumer drained").count(), 2, "both streams drained:\n{logged}");
    let loud: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains(r#""level":"ERROR""#) || line.contains(r#""level":"WARN""#))
        .collect();
    assert!(loud.is_empty(), "a clean stop logged:\n{}", loud.join("\n"));
}

/// A broker that accepts the connection and then says nothing (still booting, or behind a dead path): the
/// consumer gives the attempt up and tries again, instead of waiting for good, and a SIGTERM meanwhile
/// stops it at once, not at the end of its stop budget. (The soak found a consumer stuck for minutes in
/// a connection to a restarting broker, which then overran its stop budget.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_never_answers_the_handshake_neither_stalls_the_consumer_nor_its_stop() {
    let mut pipeline = Pipeline::start(&amqp_url(), 0).await;
    let (proxy, through) = HangingProxy::in_front_of(&pipeline.amqp_url).await;
    proxy.hang();
    pipeline.start_consumer_through(&through);
    let gave_up = eventually(Duration::from_secs(60), "the consumer to give the silent connection up", || async {
        let logged = pipeline.consumer_log();
        logged.contains("did not complete the connection").then_some(())
    });
    gave_up.await;
    let logged = pipeline.stop_consumer();
    assert!(logged.contains("consumer stopped"), "{logged}");
    assert!(!logged.contains("did not stop within the budget"), "the stop waited for the connection:\n{logged}");
}
