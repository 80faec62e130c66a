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
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, License, ObjectBuilder, OpenApi, OpenApiBuilder, Ref,
    ResponseBuilder, Type, header::HeaderBuilder,
};
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

/// Adds to every operation the answers that any of them can give, unless it documents them itself: 500
/// and 503 (with `Retry-After`) for any, and 400, 413 and 415 for one that takes a body.
fn document_common_responses(openapi: &mut OpenApi) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
    };
    let retry_after = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
        .description(Some("Seconds to wait before retrying"))
        .build();
    let common = [
        ("500", error("An internal error (`internal`), or a write whose outcome is unknown (`outcome_unknown`, `timeout`): retry only with the same Idempotency-Key").build()),
        ("503", error("The database is unavailable or cannot be reached (`unavailable`); retry after `Retry-After` seconds").header("retry-after", retry_after).build()),
    ];
    let with_body = [
        ("400", error("Malformed JSON, a missing field or a wrong type").build()),
        ("413", error(&format!("A body over {BODY_LIMIT_BYTES} bytes (`payload_too_large`)")).build()),
        ("415", error("A body that is not `application/json` (`unsupported_media_type`)").build()),
    ];
    for item in openapi.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let takes_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            for (status, response) in common.iter().chain(with_body.iter().filter(|_| takes_body)) {
                responses.entry((*status).to_owned()).or_insert_with(|| response.clone().into());
            }
        }
    }
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
    document_common_responses(&mut openapi);
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
