//! HTTP plumbing shared by the APIs: the router assembly, bearer-token authentication, one JSON error
//! shape, extractors that use it, per-route metrics, the operational endpoints, and a server that drains in-flight requests on shutdown.

mod api;
mod auth;
mod error;
mod extract;
mod metrics;
mod ops;

pub use api::{BODY_LIMIT_BYTES, api_router, openapi};
pub use auth::{Auth, AuthConfig};
pub use error::{ErrorBody, error_response, internal_error, method_not_allowed, route_not_found};
pub use extract::{Json, Path, PositiveId, Query, Rejection};
pub use metrics::{HttpMetrics, track_requests};
pub use ops::{Check, Readiness, ops_router};

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, header::CONNECTION},
    middleware::{self, Next},
    response::Response,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a stopping server goes on answering, with `Connection: close` on every response, before it
/// closes its idle connections. A client that is using a keep-alive connection moves to a new one (and so
/// to another replica) instead of sending its next request into a connection that is being closed.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// Serves `router` until `shutdown` is cancelled, drains for [`SHUTDOWN_DRAIN`], then lets in-flight
/// requests finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    let draining = Arc::new(AtomicBool::new(false));
    let router = router.layer(middleware::from_fn_with_state(draining.clone(), close_when_draining));
    let drained = async move {
        shutdown.cancelled().await;
        draining.store(true, Ordering::Relaxed);
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    axum::serve(listener, router).with_graceful_shutdown(drained).await
}

async fn close_when_draining(State(draining): State<Arc<AtomicBool>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One request on `stream` (kept alive); the response's head, lower-cased.
    async fn get(stream: &mut tokio::net::TcpStream) -> String {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut buffer = vec![0; 4096];
        let read = stream.read(&mut buffer).await.unwrap();
        String::from_utf8_lossy(&buffer[..read]).to_lowercase()
    }

    #[tokio::test]
    async fn a_stopping_server_tells_keep_alive_clients_to_go_before_it_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, shutdown.clone()));
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let before = get(&mut stream).await;
        assert!(before.starts_with("http/1.1 200") && !before.contains("connection: close"), "{before}");
        shutdown.cancel();
        // The same keep-alive connection: still answered, and told to close.
        let during = get(&mut stream).await;
        assert!(during.starts_with("http/1.1 200") && during.contains("connection: close"), "{during}");
        server.await.unwrap().unwrap();
    }
}
