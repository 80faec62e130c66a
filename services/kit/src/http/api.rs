//! How a service assembles its API: the routes and their OpenAPI document, the common fallbacks, body
//! limit and metrics, then the operational endpoints and request tracing around everything.

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{StatusCode, header::CONTENT_LENGTH},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use prometheus::Registry;
use tower_http::trace::TraceLayer;
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, License, OpenApi, OpenApiBuilder};
use utoipa_axum::router::OpenApiRouter;

use super::{
    Auth, ErrorBody, HttpMetrics, Readiness, auth::require_bearer, error_response, method_not_allowed, ops_router,
    route_not_found, track_requests,
};

/// Largest request body accepted; anything bigger is a 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Answers a request whose `Content-Length` is over [`BODY_LIMIT_BYTES`] with a 413 before anything reads
/// its body: a client that sent `Expect: 100-continue` gets the 413 instead of `100 Continue` (hyper
/// sends that only once the body is read), and sends nothing more. A body without a length (chunked)
/// is cut off by the extractors' limit as it is read.
async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
    let length = request.headers().get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    match length {
        Some(length) if length > BODY_LIMIT_BYTES as u64 => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is {length} bytes; at most {BODY_LIMIT_BYTES} are accepted"),
        ),
        _ => next.run(request).await,
    }
}

/// An empty OpenAPI document for an API: its title, version, description and the project's license, and
/// the common
/// [`ErrorBody`] schema that every error response refers to. Routes add the rest.
pub fn openapi(title: &str, version: &str, description: &str) -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .version(version)
                .description(Some(description))
                .license(Some(License::new(env!("CARGO_PKG_LICENSE")))),
        )
        .components(Some(ComponentsBuilder::new().schema_from::<ErrorBody>().build()))
        .build()
}

/// The service's router: `routes`, which need `auth`, with their OpenAPI document at
/// `/api/openapi.json`, JSON 404 and 405 fallbacks, the body limit and per-route metrics; plus
/// `/healthz`, `/readyz` (asking `readiness`) and `/metrics` (serving `registry`), which are open.
pub fn api_router<S, R>(routes: OpenApiRouter<S>, state: S, auth: Auth, registry: Registry, readiness: R) -> Router
where
    S: Clone + Send + Sync + 'static,
    R: Readiness,
{
    let (api, mut openapi) = routes.split_for_parts();
    auth.document(&mut openapi);
    let openapi = Arc::new(openapi);
    let metrics = HttpMetrics::register(&registry).expect("HTTP metrics register once per registry");
    api.route_layer(middleware::from_fn(refuse_oversized_bodies))
        .route_layer(middleware::from_fn_with_state(auth, require_bearer))
        .route("/api/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(metrics, track_requests))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
        .merge(ops_router(registry, readiness))
        .layer(TraceLayer::new_for_http())
}
