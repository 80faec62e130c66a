//! The HTTP API: routes, shared state, and the OpenAPI document built from the handlers themselves.

mod error;
mod orders;
mod products;

use std::sync::Arc;

use analytics_kit::http::{Check, HttpMetrics, Readiness, ops_router, track_requests};
use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get};
use prometheus::Registry;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::ApiError;

use crate::outbox::RelayWaker;

/// Largest request body accepted; anything bigger is a 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pool: PgPool,
    /// The relay in this process, woken after each commit; `None` when it runs elsewhere.
    relay: Option<RelayWaker>,
}

impl AppState {
    pub fn new(pool: PgPool, relay: Option<RelayWaker>) -> Self {
        Self { pool, relay }
    }

    /// Tells the relay in this process, if any, that a commit put events in the outbox.
    fn committed(&self) {
        if let Some(relay) = &self.relay {
            relay.wake();
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Command API",
        description = "The write side of the analytics pipeline. Every error is `{\"error\": code, \"message\": text}`."
    ),
    components(schemas(analytics_kit::http::ErrorBody))
)]
struct ApiDoc;

/// The API, the OpenAPI document at `/api/openapi.json`, and the operational endpoints.
pub fn router(state: AppState, registry: Registry) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(products::create))
        .routes(routes!(products::get, products::update))
        .routes(routes!(orders::create))
        .routes(routes!(orders::get))
        .split_for_parts();
    let openapi = Arc::new(openapi);
    let metrics = HttpMetrics::register(&registry).expect("HTTP metrics register once per registry");
    let readiness = Ready::new(state.pool.clone(), state.relay.clone());
    api.route("/api/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .fallback(analytics_kit::http::route_not_found)
        .method_not_allowed_fallback(analytics_kit::http::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(metrics, track_requests))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
        .merge(ops_router(registry, readiness))
        .layer(TraceLayer::new_for_http())
}

/// Ready when the write database answers. A broker outage does not make the service unready: orders
/// are still accepted and wait in the outbox, so the broker's state is reported but not required.
/// The standalone relay reports the same way; without a relay in the process, the broker is not
/// reported at all.
pub struct Ready {
    pool: PgPool,
    relay: Option<RelayWaker>,
}

impl Ready {
    pub fn new(pool: PgPool, relay: Option<RelayWaker>) -> Self {
        Self { pool, relay }
    }
}

impl Readiness for Ready {
    async fn checks(&self) -> Vec<(&'static str, Check)> {
        let database = analytics_kit::db::ping(&self.pool).await.map(|()| "ok").map_err(|e| e.to_string());
        let mut checks = vec![("database", database)];
        if let Some(relay) = &self.relay {
            let broker = if relay.broker_connected() { "connected" } else { "disconnected; events wait in the outbox" };
            checks.push(("broker", Ok(broker)));
        }
        checks
    }
}
