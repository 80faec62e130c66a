//! The analytics API, its OpenAPI document, and the operational endpoints.

mod analytics;
mod error;

use std::sync::Arc;

use analytics_kit::{
    db::Database,
    http::{Auth, Check, Readiness, api_router, openapi},
};
use axum::Router;
use prometheus::Registry;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::QueryError;

use crate::sync::QueueDepths;

#[derive(Clone)]
pub struct AppState {
    db: Database,
    depths: Arc<QueueDepths>,
}

impl AppState {
    pub fn new(db: Database, depths: QueueDepths) -> Self {
        Self { db, depths: Arc::new(depths) }
    }
}

/// The API and its OpenAPI document at `/api/openapi.json`; its metrics go to `registry`.
pub fn router(state: AppState, auth: Auth, registry: &Registry) -> Router {
    let document = openapi(
        "Query API",
        env!("CARGO_PKG_VERSION"),
        "Analytics from the read model. Every error is `{\"error\": code, \"message\": text}`.",
    );
    let routes = OpenApiRouter::with_openapi(document)
        .routes(routes!(analytics::product_sales))
        .routes(routes!(analytics::top_products))
        .routes(routes!(analytics::category_revenue))
        .routes(routes!(analytics::categories))
        .routes(routes!(analytics::customer_lifetime_value))
        .routes(routes!(analytics::customer_categories))
        .routes(routes!(analytics::hourly_sales))
        .routes(routes!(analytics::sync_status));
    api_router(routes, state, auth, registry)
}

/// Ready when the read database answers; the broker only feeds sync-status's queue depths.
pub struct Ready {
    pub db: Database,
}

impl Readiness for Ready {
    async fn checks(&self) -> Vec<(&'static str, Check)> {
        let database = self.db.ping().await.map(|()| "ok").map_err(|e| e.to_string());
        vec![("database", database)]
    }
}
