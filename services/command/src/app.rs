//! Builds the service from its configuration and runs it until shutdown.

use analytics_kit::{
    db::Database,
    http::{Auth, bind, ops_router, serve_with_admin},
};
use anyhow::Context;
use prometheus::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{DatabaseConfig, RelayProcessConfig, ServeConfig},
    http,
    outbox::Relay,
};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    admin_listener: TcpListener,
    admin_router: axum::Router,
    relay: Option<Relay>,
    db: Database,
}

impl App {
    /// Binds the listener (port 0 picks a free one), opens the write database's pool, and wires the HTTP
    /// API to the relay, unless `no_relay`.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let db = write_pool(&config.database)?;
        let relay = if config.no_relay { None } else { Some(Relay::new(db.pool().clone(), &config.relay, &registry)?) };
        let waker = relay.as_ref().map(Relay::waker);
        let auth = Auth::from_config(&config.auth, "command")?;
        let router = http::router(http::AppState::new(db.clone(), waker.clone()), auth, &registry);
        let admin_router = ops_router(registry, http::Ready::new(db.clone(), waker));
        let listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        Ok(Self { listener, router, admin_listener, admin_router, relay, db })
    }

    /// The API's port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    /// The port of /healthz, /readyz and /metrics.
    pub fn admin_port(&self) -> u16 {
        self.admin_listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    /// Serves until `shutdown`; in-flight requests and the relay's current batch finish first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = self.relay.map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        let api = (self.listener, self.router);
        let served = serve_with_admin(api, (self.admin_listener, self.admin_router), shutdown.clone()).await;
        shutdown.cancel();
        if let Some(relay) = relay {
            relay.await.context("the relay task panicked")?;
        }
        self.db.close().await;
        served.context("the HTTP server failed")
    }
}

/// The relay as its own process (`command-service relay`), with /healthz, /readyz and /metrics on
/// `config.listen`. Runs until `shutdown`; the batch in flight is published and marked first.
pub async fn run_relay(config: RelayProcessConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = write_pool(&config.database)?;
    let relay = Relay::new(db.pool().clone(), &config.relay, &registry)?;
    let router = ops_router(registry, http::Ready::new(db.clone(), Some(relay.waker())));
    let listener = bind(config.listen).await?;
    tracing::info!(port = listener.local_addr().map(|a| a.port()).unwrap_or_default(), "relay running");
    let server = tokio::spawn(analytics_kit::http::serve(listener, router, shutdown.clone()));
    relay.run(shutdown.clone()).await;
    shutdown.cancel();
    db.close().await;
    server.await.context("the ops server panicked")?.context("the ops server failed")
}

fn write_pool(config: &DatabaseConfig) -> Result<Database, sqlx::Error> {
    analytics_kit::db::pool(&config.url, config.max_connections, "command-service")
}
