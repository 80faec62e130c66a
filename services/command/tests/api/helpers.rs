//! `spawn_app()`: the service on a free port, with a fresh database and broker names of its own.

use std::time::Duration;

use analytics_events::Topology;
use analytics_testkit::unique_prefix;
pub use analytics_testkit::{PrivateBroker, amqp_url, assert_error, declare, read_at_least, read_exactly};
use command_service::{
    App, MIGRATOR,
    config::{DatabaseConfig, RelayConfig, ServeConfig},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A new write database, migrated.
pub async fn fresh_database() -> String {
    analytics_testkit::fresh_database(&MIGRATOR).await
}

pub fn database_config(database_url: &str) -> DatabaseConfig {
    DatabaseConfig { url: database_url.into(), max_connections: 20 }
}

pub fn relay_config(amqp_url: &str, prefix: &str) -> RelayConfig {
    RelayConfig {
        amqp_url: Some(amqp_url.into()),
        topology_prefix: prefix.to_owned(),
        batch_size: 100,
        confirm_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(200),
    }
}

pub struct TestApp {
    pub address: String,
    /// The base URL of /healthz, /readyz and /metrics.
    pub admin: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub database_url: String,
    pub amqp_url: String,
    pub prefix: String,
    pub topology: Topology,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// By default the service runs without its relay, so that every event it writes stays in the outbox for
/// the test to read (the relay deletes the rows it publishes).
pub struct Options {
    pub relay: bool,
    pub amqp_url: String,
}

impl Default for Options {
    fn default() -> Self {
        Self { relay: false, amqp_url: amqp_url() }
    }
}

/// The service alone (no relay) over `database_url`, taking `auth`, as a test of its own starts it:
/// its API's base URL, its admin port's, what stops it, and its task.
pub async fn spawn_alone(
    database_url: &str,
    auth: analytics_kit::http::AuthConfig,
) -> (String, String, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    analytics_kit::telemetry::init_for_tests();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        no_relay: true,
        auth,
        database: database_config(database_url),
        relay: relay_config("amqp://unused", "unused."),
    };
    let app = App::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    (base, admin, shutdown, running)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// The service with its relay, publishing to the shared broker.
pub async fn spawn_app_with_relay() -> TestApp {
    spawn_app_with(Options { relay: true, ..Options::default() }).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    analytics_kit::telemetry::init_for_tests();
    let database_url = fresh_database().await;
    let prefix = unique_prefix();
    let relay = relay_config(&options.amqp_url, &prefix);
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        no_relay: !options.relay,
        auth: analytics_testkit::auth_config(),
        database: database_config(&database_url),
        relay,
    };
    let app = App::build(config).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let pool = app.pool().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    // Queues exist before the first event, so tests can read them even before the relay connects.
    let topology = Topology::with_prefix(&prefix);
    declare(&options.amqp_url, &topology).await;
    TestApp {
        address,
        admin,
        pool,
        client: analytics_testkit::api_client(),
        database_url,
        amqp_url: options.amqp_url,
        prefix,
        topology,
        shutdown,
        handle: Some(handle),
    }
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

    /// `path` on the admin port: its status and JSON body.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.admin)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The service's /metrics, from the admin port.
    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.admin)).send().await.unwrap().text().await.unwrap()
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

    /// Waits until the relay has published every outbox row (and so deleted it).
    pub async fn wait_until_outbox_drained(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&self.pool).await.unwrap();
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
