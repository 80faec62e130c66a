//! `/healthz` (the process is alive), `/readyz` (its dependencies answer) and `/metrics`.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;

/// The outcome of one dependency check: `Ok` with a short note, or `Err` with why it failed.
pub type Check = Result<&'static str, String>;

/// What a service checks before it says it is ready.
pub trait Readiness: Send + Sync + 'static {
    /// Each named dependency and its state. A single `Err` makes `/readyz` answer 503.
    fn checks(&self) -> impl Future<Output = Vec<(&'static str, Check)>> + Send;
}

#[derive(Serialize)]
struct ReadyBody {
    status: &'static str,
    checks: BTreeMap<&'static str, String>,
}

/// The operational endpoints, to merge into a service's router.
pub fn ops_router<R: Readiness>(registry: Registry, readiness: R) -> Router {
    let readiness = Arc::new(readiness);
    Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(ready::<R>).with_state(readiness))
        .route("/metrics", get(metrics).with_state(registry))
}

async fn ready<R: Readiness>(State(readiness): State<Arc<R>>) -> impl IntoResponse {
    let checks = readiness.checks().await;
    let all_ok = checks.iter().all(|(_, check)| check.is_ok());
    let checks = checks
        .into_iter()
        .map(|(name, check)| (name, check.map_or_else(|error| format!("error: {error}"), str::to_owned)))
        .collect();
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = ReadyBody { status: if all_ok { "ready" } else { "unavailable" }, checks };
    (status, axum::Json(body))
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        Ok(()) => (StatusCode::OK, [("content-type", prometheus::TEXT_FORMAT)], buffer).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
