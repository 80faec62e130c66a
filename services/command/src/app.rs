//! Builds the service from its configuration and runs it until shutdown.

use anyhow::Context;
use prometheus::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{RelayProcessConfig, ServeConfig},
    http,
    outbox::Relay,
};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    relay: Option<Relay>,
    pool: PgPool,
}

impl App {
    /// Binds the listener (port 0 picks a free one) and wires the HTTP API to the relay.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let relay = Relay::new(&config.relay, &registry)?;
        let pool = relay.pool().clone();
        let state = http::AppState::new(pool.clone(), relay.waker());
        let router = http::router(state, registry);
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let relay = (!config.no_relay).then_some(relay);
        Ok(Self { listener, router, relay, pool })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown`; in-flight requests and the relay's current batch finish first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = self.relay.map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        let served = analytics_kit::http::serve(self.listener, self.router, shutdown.clone()).await;
        shutdown.cancel();
        if let Some(relay) = relay {
            relay.await.context("the relay task panicked")?;
        }
        self.pool.close().await;
        served.context("the HTTP server failed")
    }
}

/// The relay as its own process (`command-service relay`), with /healthz, /readyz and /metrics on
/// `config.listen`. Runs until `shutdown`; the batch in flight is published and marked first.
pub async fn run_relay(config: RelayProcessConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = Registry::new();
    let relay = Relay::new(&config.relay, &registry)?;
    let pool = relay.pool().clone();
    let router = analytics_kit::http::ops_router(registry, http::Ready::new(pool.clone(), relay.waker()));
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(port = listener.local_addr().map(|a| a.port()).unwrap_or_default(), "relay running");
    let server = tokio::spawn(analytics_kit::http::serve(listener, router, shutdown.clone()));
    relay.run(shutdown.clone()).await;
    shutdown.cancel();
    pool.close().await;
    server.await.context("the ops server panicked")?.context("the ops server failed")
}
