//! While RabbitMQ is down the service keeps taking orders; the relay delivers them when it is back.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Options, PrivateBroker, declare, read_exactly, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_accepted_while_the_broker_is_stopped_are_all_delivered_after_it_restarts() {
    let broker = PrivateBroker::start();
    let app = spawn_app_with(Options { relay: true, amqp_url: broker.url() }).await;
    let product = app.create_product("Lamp", "Home", "2.50", 1000).await;
    app.wait_until_outbox_drained(Duration::from_secs(30)).await;

    broker.stop();
    for customer in 1..=25 {
        let (status, body) = app
            .post("/api/orders", json!({"customerId": customer, "items": [{"productId": product, "quantity": 2}]}))
            .await;
        assert_eq!(status, 201, "orders are accepted while the broker is down: {body}");
    }
    let (status, ready) = app.admin_get("/readyz").await;
    assert_eq!(status, 200, "a broker outage does not make the command service unready: {ready}");
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&app.pool).await.unwrap();
    assert_eq!(pending, 25, "the orders wait in the outbox");

    broker.start_again();
    app.wait_until_outbox_drained(Duration::from_secs(60)).await;
    declare(&broker.url(), &app.topology).await;
    let orders =
        read_exactly(&broker.url(), &app.topology.order_queue, 25, Duration::from_secs(20), Duration::from_millis(800))
            .await;
    let mut customers: Vec<i64> = orders.iter().map(|o| o["payload"]["customerId"].as_i64().unwrap()).collect();
    customers.sort_unstable();
    assert_eq!(customers, (1..=25).collect::<Vec<_>>());
    app.stop().await;
}

/// A broker that accepts the connection and then says nothing (still booting, or behind a dead path):
/// the relay does not wait for it for good, and the service's stop does not wait for the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_never_answers_the_handshake_holds_neither_the_relay_nor_the_stop() {
    use command_service::{App, config::ServeConfig};

    use crate::helpers::{database_config, fresh_database, relay_config};

    analytics_kit::telemetry::init_for_tests();
    let database_url = fresh_database().await;
    let (proxy, through) = analytics_testkit::HangingProxy::in_front_of(&analytics_testkit::amqp_url()).await;
    proxy.hang();
    let app = App::build(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        no_relay: false,
        auth: analytics_testkit::auth_config(),
        database: database_config(&database_url),
        relay: relay_config(&through, &analytics_testkit::unique_prefix()),
    })
    .await
    .unwrap();
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    let ready: serde_json::Value = reqwest::get(format!("{admin}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["broker"], "disconnected; events wait in the outbox", "{ready}");

    shutdown.cancel();
    // A bound for a test that would otherwise hang, not a performance figure: the stop is immediate.
    let stopped = tokio::time::timeout(Duration::from_secs(60), running).await;
    stopped.expect("the service stopped while its relay was connecting").unwrap().unwrap();
}
