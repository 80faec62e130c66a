//! Builds the consumer and its operational endpoints, and runs them until shutdown.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use analytics_events::Topology;
use analytics_kit::{
    db::Database,
    http::{Check, Readiness, ops_router},
};
use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ServeConfig,
    consume::{Consumer, ConsumerMetrics, prune_processed_events},
};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    consumer: Consumer,
    retention: std::time::Duration,
}

impl App {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let db = analytics_kit::db::pool(&config.database.url, config.database.max_connections, "consumer-service")?;
        let metrics = ConsumerMetrics::register(&registry)?;
        let consumer = Consumer::new(
            db.pool().clone(),
            config.amqp_url,
            Topology::with_prefix(&config.topology_prefix),
            config.prefetch,
            config.batch_size,
            metrics,
        );
        let readiness = Ready { db, broker: consumer.connected_flag() };
        let router = ops_router(registry, readiness);
        let listener = analytics_kit::http::bind(config.listen).await?;
        Ok(Self { listener, router, consumer, retention: config.retention.processed_events_retention })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    /// Consumes until `shutdown`; the batches in hand are applied and acked first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let server = tokio::spawn(analytics_kit::http::serve(self.listener, self.router, shutdown.clone()));
        let pruning =
            tokio::spawn(prune_processed_events(self.consumer.pool.clone(), self.retention, shutdown.clone()));
        self.consumer.run(shutdown.clone()).await;
        shutdown.cancel();
        drop(pruning.await);
        self.consumer.pool.close().await;
        server.await.context("the HTTP server panicked")?.context("the HTTP server failed")
    }
}

/// Ready when both the read database and the broker answer: without either it cannot do its work.
struct Ready {
    db: Database,
    broker: Arc<AtomicBool>,
}

impl Readiness for Ready {
    async fn checks(&self) -> Vec<(&'static str, Check)> {
        let database = self.db.ping().await.map(|()| "ok").map_err(|e| e.to_string());
        let broker =
            if self.broker.load(Ordering::Relaxed) { Ok("consuming") } else { Err("not connected".to_owned()) };
        vec![("database", database), ("broker", broker)]
    }
}
