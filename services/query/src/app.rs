//! Builds the service from its configuration and runs it until shutdown.

use analytics_events::Topology;
use analytics_kit::{db::Database, http::Auth};
use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, http, sync::QueueDepths};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    db: Database,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let db = analytics_kit::db::pool(&config.database_url, config.database_max_connections, "query-service")?;
        let depths = QueueDepths::new(config.amqp_url, Topology::with_prefix(&config.topology_prefix));
        let auth = Auth::from_config(&config.auth, "query")?;
        let router = http::router(http::AppState::new(db.clone(), depths), auth, registry);
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self { listener, router, db })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let served = analytics_kit::http::serve(self.listener, self.router, shutdown).await;
        self.db.close().await;
        served.context("the HTTP server failed")
    }
}
