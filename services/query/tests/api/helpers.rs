//! `spawn_app()`: the query service on a free port over a fresh read database, and event builders.

use analytics_events::{Envelope, EventType, OrderCreated, OrderLine, ProductState, timestamp};
use analytics_testkit::{amqp_url, declare, fresh_database, unique_prefix};
use chrono::{DateTime, Utc};
use consumer_service::{
    MIGRATOR,
    projection::{self, Stream},
};
use query_service::{App, config::Config};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    /// The base URL of /healthz, /readyz and /metrics.
    pub admin: String,
    pub pool: PgPool,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    analytics_kit::telemetry::init_for_tests();
    let database_url = fresh_database(&MIGRATOR).await;
    let prefix = unique_prefix();
    declare(&amqp_url(), &analytics_events::Topology::with_prefix(&prefix)).await;
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        auth: analytics_testkit::auth_config(),
        database_url: database_url.as_str().into(),
        database_max_connections: 5,
        amqp_url: amqp_url().into(),
        topology_prefix: prefix,
    };
    let app = App::build(config).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let pool = PgPool::connect(&database_url).await.unwrap();
    TestApp { address, admin, pool, client: analytics_testkit::api_client(), shutdown }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.address)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.client.get(format!("{}{path}", self.address)).send().await.unwrap().text().await.unwrap()
    }

    /// Applies events exactly as the consumer does.
    pub async fn apply(&self, stream: Stream, bodies: &[Vec<u8>]) {
        let batch: Vec<_> = bodies.iter().map(|body| projection::parse(body, stream).unwrap()).collect();
        projection::apply(&self.pool, stream, &batch).await.unwrap();
    }
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

pub fn product(id: i64, name: &str, category: &str, price: &str) -> Vec<u8> {
    let payload = ProductState {
        product_id: id,
        name: name.into(),
        category: category.into(),
        price: price.parse().unwrap(),
        stock: 10,
        version: 1,
    };
    Envelope::new(EventType::ProductCreated, Utc::now(), id, payload).to_body()
}

/// An OrderCreated with lines of (product id, name, category, unit price, quantity).
pub fn order(id: i64, customer: i64, ordered_at: &str, lines: &[(i64, &str, &str, &str, i64)]) -> Vec<u8> {
    let ordered_at = timestamp::truncate(at(ordered_at));
    let items: Vec<OrderLine> = lines
        .iter()
        .map(|(product_id, name, category, price, quantity)| OrderLine {
            product_id: *product_id,
            product_name: (*name).into(),
            category: (*category).into(),
            unit_price: price.parse().unwrap(),
            quantity: *quantity,
        })
        .collect();
    let total = items.iter().map(|item| item.unit_price * item.quantity).sum();
    let payload = OrderCreated { order_id: id, customer_id: customer, ordered_at, total, items };
    Envelope::new(EventType::OrderCreated, ordered_at, id, payload).to_body()
}
