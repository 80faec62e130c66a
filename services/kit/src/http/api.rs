//! How a service assembles its API: the routes and their OpenAPI document, the common fallbacks, body
//! limit and metrics, then the operational endpoints and request tracing around everything.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
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
    Auth, ErrorBody, HttpMetrics, auth::require_bearer, error_response, method_not_allowed, route_not_found,
    track_requests,
};

/// Largest request body accepted; anything bigger is a 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// How long a client may take to send a request's body once its headers are in; then the request is a
/// 408 and nothing is done. A body within [`BODY_LIMIT_BYTES`] takes milliseconds on any working link.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a route may take; then it is answered 500 `timeout` (its work is cancelled).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers a request that runs past `limit` with a 500 `timeout`: its work is cancelled wherever it was,
/// perhaps in a commit, so its outcome is unknown and nothing invites a blind retry (no 503, no
/// `Retry-After`). It runs inside the request metrics, which count it as the 500 it is.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(?limit, "request timed out");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "timeout",
                format!("the request took longer than {limit:?}; its outcome is unknown"),
            )
        }
    }
}

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
        (
            "400",
            error("Malformed JSON, a body that is not a JSON object, an unknown or missing field, or a wrong type")
                .build(),
        ),
        (
            "408",
            error(&format!(
                "The body did not arrive within {} s (`request_timeout`); nothing was done",
                BODY_READ_TIMEOUT.as_secs()
            ))
            .build(),
        ),
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

/// The service's API: `routes`, which need `auth`, with their OpenAPI document at `/api/openapi.json`,
/// JSON 404 and 405 fallbacks, the body limit, the time limit and per-route metrics (registered in
/// `registry`), and an open `GET /health`. The operational endpoints are not here: they are served on the
/// admin port ([`super::ops_router`]), which only the kubelet and monitoring reach. Requests are traced
/// at debug level; a failed one is logged where it failed (a 500's cause, a database outage once), not
/// once more per response.
pub fn api_router<S>(routes: OpenApiRouter<S>, state: S, auth: Auth, registry: &Registry) -> Router
where
    S: Clone + Send + Sync + 'static,
{
    let (api, mut openapi) = routes.split_for_parts();
    auth.document(&mut openapi);
    document_common_responses(&mut openapi);
    let openapi = Arc::new(openapi);
    let metrics = HttpMetrics::register(registry).expect("HTTP metrics register once per registry");
    api.route_layer(middleware::from_fn(refuse_oversized_bodies))
        .route_layer(middleware::from_fn_with_state(auth, require_bearer))
        .route("/api/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(REQUEST_TIMEOUT, time_limit))
        .route_layer(middleware::from_fn_with_state(metrics, track_requests))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
        // The liveness check that other implementations of the same API answer, for their clients.
        .route("/health", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .layer(TraceLayer::new_for_http().on_failure(()))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::post};
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::http::{AuthConfig, database_error};

    fn open_api(routes: OpenApiRouter, registry: &Registry) -> Router {
        let auth = Auth::from_config(&AuthConfig { allow_unauthenticated: true, ..AuthConfig::default() }, "test");
        api_router(routes, (), auth.unwrap(), registry)
    }

    /// The value of `http_requests_total` for `status`, summed over the routes.
    fn requests_with_status(registry: &Registry, status: &str) -> f64 {
        let families = registry.gather();
        let Some(requests) = families.iter().find(|family| family.name() == "http_requests_total") else { return 0.0 };
        let with_status = |metric: &&prometheus::proto::Metric| {
            metric.get_label().iter().any(|label| label.name() == "status" && label.value() == status)
        };
        requests.get_metric().iter().filter(with_status).map(|metric| metric.get_counter().get_value()).sum()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_time_limit_is_a_500_the_request_metrics_count() {
        let registry = Registry::new();
        let slow =
            OpenApiRouter::new().route("/api/slow", get(|| async { tokio::time::sleep(REQUEST_TIMEOUT * 2).await }));
        let request = axum::http::Request::builder().uri("/api/slow").body(Body::empty()).unwrap();
        let response = open_api(slow, &registry).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response.headers().get(axum::http::header::RETRY_AFTER).is_none(),
            "an unknown outcome invites no retry"
        );
        assert_eq!(requests_with_status(&registry, "500"), 1.0, "the dashboard's 5xx panel sees timeouts");
    }

    /// Counts the events at WARN or above that reach it.
    #[derive(Clone, Default)]
    struct LoudEvents(Arc<std::sync::atomic::AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LoudEvents {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if *event.metadata().level() <= tracing::Level::WARN {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// During a database outage each request is a 503, counted in the metrics; the log says so a
    /// bounded number of times, not once a request.
    #[tokio::test]
    async fn a_database_outage_is_logged_a_bounded_number_of_times_however_many_requests_fail() {
        let loud = LoudEvents::default();
        let _logging = tracing::subscriber::set_default(tracing_subscriber::registry().with(loud.clone()));
        let registry = Registry::new();
        let failing =
            OpenApiRouter::new().route("/api/orders", post(|| async { database_error(&sqlx::Error::PoolTimedOut) }));
        let router = open_api(failing, &registry);
        for _ in 0..300 {
            let request = axum::http::Request::builder().method("POST").uri("/api/orders").body(Body::empty()).unwrap();
            assert_eq!(router.clone().oneshot(request).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(requests_with_status(&registry, "503"), 300.0);
        let logged = loud.0.load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..=3).contains(&logged), "{logged} warnings or errors for 300 failed requests");
    }

    #[tokio::test]
    async fn health_answers_as_other_implementations_of_the_api_do_without_a_token() {
        let auth =
            Auth::from_config(&AuthConfig { tokens: vec!["t".repeat(40).into()], ..AuthConfig::default() }, "test");
        let routes = OpenApiRouter::new().route("/api/things", get(|| async { "things" }));
        let router = api_router(routes, (), auth.unwrap(), &Registry::new());
        let request = axum::http::Request::builder().uri("/health").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), serde_json::json!({"status": "ok"}));
    }
}
