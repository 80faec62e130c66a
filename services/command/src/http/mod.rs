//! The HTTP API: routes, shared state, and the OpenAPI document built from the handlers themselves.

mod error;
mod idempotency;
mod orders;
mod products;

use analytics_kit::{
    db::Database,
    http::{Auth, Check, Readiness, api_router, openapi},
};
use axum::Router;
use prometheus::Registry;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::ApiError;

use crate::outbox::RelayWaker;

#[derive(Clone)]
pub struct AppState {
    db: Database,
    /// The relay in this process, woken after each commit; `None` when it runs elsewhere.
    relay: Option<RelayWaker>,
}

impl AppState {
    pub fn new(db: Database, relay: Option<RelayWaker>) -> Self {
        Self { db, relay }
    }

    /// Tells the relay in this process, if any, that a commit put events in the outbox.
    fn committed(&self) {
        if let Some(relay) = &self.relay {
            relay.wake();
        }
    }
}

/// The API and its OpenAPI document at `/api/openapi.json`; its metrics go to `registry`.
pub fn router(state: AppState, auth: Auth, registry: &Registry) -> Router {
    let document = openapi(
        "Command API",
        env!("CARGO_PKG_VERSION"),
        "The write side of the analytics pipeline. Every error is `{\"error\": code, \"message\": text}`.",
    );
    let routes = OpenApiRouter::with_openapi(document)
        .routes(routes!(products::create))
        .routes(routes!(products::get, products::update))
        .routes(routes!(orders::create))
        .routes(routes!(orders::get));
    api_router(routes, state, auth, registry)
}

/// Ready when the write database answers. A broker outage does not make the service unready: orders
/// are still accepted and wait in the outbox, so the broker's state is reported but not required.
/// The standalone relay reports the same way; without a relay in the process, the broker is not
/// reported at all.
pub struct Ready {
    db: Database,
    relay: Option<RelayWaker>,
}

impl Ready {
    pub fn new(db: Database, relay: Option<RelayWaker>) -> Self {
        Self { db, relay }
    }
}

impl Readiness for Ready {
    async fn checks(&self) -> Vec<(&'static str, Check)> {
        let database = self.db.ping().await.map(|()| "ok").map_err(|e| e.to_string());
        let mut checks = vec![("database", database)];
        if let Some(relay) = &self.relay {
            let broker = if relay.broker_connected() { "connected" } else { "disconnected; events wait in the outbox" };
            checks.push(("broker", Ok(broker)));
        }
        checks
    }
}
