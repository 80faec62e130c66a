//! HTTP plumbing shared by the APIs: the router assembly, one JSON error shape, extractors that use it,
//! per-route metrics, the operational endpoints, and a server that drains in-flight requests on shutdown.

mod api;
mod error;
mod extract;
mod metrics;
mod ops;

pub use api::{BODY_LIMIT_BYTES, api_router, openapi};
pub use error::{ErrorBody, error_response, internal_error, method_not_allowed, route_not_found};
pub use extract::{Json, Path, PositiveId, Query, Rejection};
pub use metrics::{HttpMetrics, track_requests};
pub use ops::{Check, Readiness, ops_router};

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
