//! `spawn_app()`: the service on a free port, with a fresh database and broker names of its own.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use analytics_events::Topology;
use command_service::{
    App, MIGRATOR,
    config::{DatabaseConfig, RelayConfig, ServeConfig},
};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts PostgreSQL and RabbitMQ for them")
    })
}

pub fn amqp_url() -> String {
    env("TEST_AMQP_URL")
}

/// A new, migrated database of its own.
pub async fn fresh_database() -> String {
    let admin = env("TEST_DATABASE_URL");
    let name = format!("command_{}", Uuid::new_v4().simple());
    let mut connection = PgConnection::connect(&format!("{admin}/postgres")).await.expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&mut connection).await.unwrap();
    let url = format!("{admin}/{name}");
    let pool = PgPool::connect(&url).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    pool.close().await;
    url
}

pub fn relay_config(database_url: &str, amqp_url: &str, prefix: &str) -> RelayConfig {
    RelayConfig {
        database: DatabaseConfig { url: database_url.into(), max_connections: 20 },
        amqp_url: amqp_url.into(),
        topology_prefix: prefix.to_owned(),
        batch_size: 100,
        lease: Duration::from_secs(30),
        confirm_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(200),
        retention: Duration::from_secs(3600),
    }
}

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub database_url: String,
    pub amqp_url: String,
    pub prefix: String,
    pub topology: Topology,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Options {
    pub relay: bool,
    pub amqp_url: String,
    pub lease: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { relay: true, amqp_url: amqp_url(), lease: Duration::from_secs(30) }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    analytics_kit::telemetry::init_for_tests();
    let database_url = fresh_database().await;
    let prefix = format!("test-{}.", Uuid::new_v4().simple());
    let mut relay = relay_config(&database_url, &options.amqp_url, &prefix);
    relay.lease = options.lease;
    let config = ServeConfig { listen: "127.0.0.1:0".parse().unwrap(), no_relay: !options.relay, relay };
    let app = App::build(config).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    // Queues exist before the first event, so tests can read them even before the relay connects.
    let topology = Topology::with_prefix(&prefix);
    declare(&options.amqp_url, &topology).await;
    TestApp {
        address,
        pool,
        client: reqwest::Client::new(),
        database_url,
        amqp_url: options.amqp_url,
        prefix,
        topology,
        shutdown,
        handle: Some(handle),
    }
}

pub async fn declare(amqp_url: &str, topology: &Topology) {
    let connection = analytics_kit::amqp::connect(&amqp_url.into(), "test").await.expect("broker connection");
    let channel = connection.create_channel().await.unwrap();
    analytics_kit::amqp::declare_topology(&channel, topology).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
}

impl TestApp {
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.client.post(format!("{}{path}", self.address)).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.client.patch(format!("{}{path}", self.address)).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.address)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.address)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn create_product(&self, name: &str, category: &str, price: &str, stock: i64) -> i64 {
        let price: Value = serde_json::from_str(price).unwrap();
        let (status, body) = self
            .post("/api/products", json!({"name": name, "category": category, "price": price, "stock": stock}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["productId"].as_i64().unwrap()
    }

    pub async fn stock(&self, product_id: i64) -> i32 {
        sqlx::query_scalar("select stock from products where id = $1")
            .bind(product_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn outbox_count(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("select count(*) from outbox where event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until the relay has marked every outbox row published.
    pub async fn wait_until_outbox_drained(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
                .fetch_one(&self.pool)
                .await
                .unwrap();
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} outbox rows still unpublished after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the app as SIGTERM would and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads `count` messages from `queue` (acking them), then checks that no other message follows within
/// `quiet`. Returns the bodies. Panics if fewer than `count` arrive within `timeout`.
pub async fn read_exactly(amqp_url: &str, queue: &str, count: usize, timeout: Duration, quiet: Duration) -> Vec<Value> {
    let messages = read_at_least(amqp_url, queue, count, timeout, quiet).await;
    assert_eq!(messages.len(), count, "expected exactly {count} messages on {queue}, got {}", messages.len());
    messages
}

/// Reads at least `count` domain events (skipping the relay's watermarks), plus any that arrive within
/// `quiet` after the last one.
pub async fn read_at_least(
    amqp_url: &str,
    queue: &str,
    count: usize,
    timeout: Duration,
    quiet: Duration,
) -> Vec<Value> {
    let connection = analytics_kit::amqp::connect(&amqp_url.into(), "test reader").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), Default::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    loop {
        let wait = if messages.len() < count {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            quiet
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery.unwrap();
                let message: Value = serde_json::from_slice(&delivery.data).unwrap();
                if message["eventType"] != "Watermark" {
                    messages.push(message);
                }
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            Ok(None) => panic!("the consumer on {queue} was cancelled"),
            Err(_) if messages.len() < count => {
                panic!("only {} of {count} messages arrived on {queue} within {timeout:?}", messages.len())
            }
            Err(_) => break,
        }
    }
    connection.close(200, "done".into()).await.unwrap();
    messages
}

/// A RabbitMQ node of a test's own, which the test may stop and start: `hack/rabbitmq.sh` on free ports.
pub struct PrivateBroker {
    dir: PathBuf,
    ports: [u16; 3],
}

impl PrivateBroker {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("analytics-broker-{}", Uuid::new_v4().simple()));
        let ports = free_ports();
        let broker = Self { dir, ports };
        broker.start_again();
        broker
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.ports[0])
    }

    pub fn start_again(&self) {
        let [amqp, dist, epmd] = self.ports.map(|port| port.to_string());
        run_script("rabbitmq.sh", &["start", self.dir.to_str().unwrap(), &amqp, &dist, &epmd]);
    }

    pub fn stop(&self) {
        run_script("rabbitmq.sh", &["stop", self.dir.to_str().unwrap()]);
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

fn free_ports() -> [u16; 3] {
    let listeners: Vec<_> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [ports[0], ports[1], ports[2]]
}

fn run_script(script: &str, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack").join(script);
    let status =
        Command::new(&path).args(args).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(status.success(), "{} {args:?} failed", path.display());
}

/// Asserts the common error shape and code, and returns the message.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, expected_code: &str) -> String {
    assert_eq!(status, expected_status, "{body}");
    let object = body.as_object().unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    assert_eq!(object.len(), 2, "error body has exactly error and message: {body}");
    assert_eq!(body["error"], expected_code, "{body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("message is not a string: {body}"));
    assert!(!message.is_empty());
    message.to_owned()
}
