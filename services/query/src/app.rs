//! Builds the service from its configuration and runs it until shutdown.

use analytics_events::Topology;
use analytics_kit::{
    db::Database,
    http::{Auth, bind, ops_router, serve_with_admin},
};
use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, http, sync::QueueDepths};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    admin_listener: TcpListener,
    admin_router: axum::Router,
    db: Database,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let db = analytics_kit::db::pool(&config.database_url, config.database_max_connections, "query-service")?;
        let depths = QueueDepths::new(config.amqp_url, Topology::with_prefix(&config.topology_prefix));
        let auth = Auth::from_config(&config.auth, "query")?;
        let router = http::router(http::AppState::new(db.clone(), depths), auth, &registry);
        let admin_router = ops_router(registry, http::Ready { db: db.clone() });
        let listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        Ok(Self { listener, router, admin_listener, admin_router, db })
    }

    /// The API's port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    /// The port of /healthz, /readyz and /metrics.
    pub fn admin_port(&self) -> u16 {
        self.admin_listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = (self.listener, self.router);
        let served = serve_with_admin(api, (self.admin_listener, self.admin_router), shutdown).await;
        self.db.close().await;
        served.context("the HTTP server failed")
    }
}
