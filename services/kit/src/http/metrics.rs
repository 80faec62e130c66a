//! Request counts and latency per route template (never per concrete path) and per standard method
//! (any other is `other`), so that no request can add series without bound.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method, route template and status code."),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by method and route template.")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`) that records every request.
pub async fn track_requests(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics.requests.with_label_values(&[method, route.as_str(), response.status().as_str()]).inc();
    metrics.duration.with_label_values(&[method, route.as_str()]).observe(started.elapsed().as_secs_f64());
    response
}

/// The method's name if it is one of HTTP's standard methods; `other` for any made-up one.
fn method_label(method: &Method) -> &'static str {
    let standard = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    standard.into_iter().find(|(known, _)| known == method).map_or("other", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, middleware, routing::get};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn made_up_methods_share_one_series() {
        let registry = Registry::new();
        let metrics = HttpMetrics::register(&registry).unwrap();
        let router = Router::new()
            .route("/api/things", get(|| async { "ok" }))
            .route_layer(middleware::from_fn_with_state(metrics, track_requests));
        for n in 0..200 {
            let method = Method::from_bytes(format!("MADEUP{n}").as_bytes()).unwrap();
            let request = axum::http::Request::builder().method(method).uri("/api/things").body(Body::empty()).unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let get = axum::http::Request::builder().uri("/api/things").body(Body::empty()).unwrap();
        router.oneshot(get).await.unwrap();
        let families = registry.gather();
        let requests = families.iter().find(|family| family.name() == "http_requests_total").unwrap();
        let series: Vec<String> = requests
            .get_metric()
            .iter()
            .map(|metric| metric.get_label().iter().map(|label| label.value()).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(series, ["GET /api/things 200", "other /api/things 405"]);
        assert_eq!(requests.get_metric()[1].get_counter().get_value(), 200.0);
    }
}
