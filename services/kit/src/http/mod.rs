//! HTTP plumbing shared by the APIs: the router assembly, bearer-token authentication, one JSON error
//! shape, extractors that use it, per-route metrics, the operational endpoints, and a server with
//! timeouts and a connection bound that drains in-flight requests on shutdown.

mod api;
mod auth;
mod error;
mod extract;
mod metrics;
mod ops;
mod wire;

pub use api::{BODY_LIMIT_BYTES, BODY_READ_TIMEOUT, REQUEST_TIMEOUT, api_router, openapi};
pub use auth::{Auth, AuthConfig, Caller};
pub use error::{ErrorBody, database_error, error_response, internal_error, method_not_allowed, route_not_found};
pub use extract::{Json, Path, PositiveId, Query, Rejection};
pub use metrics::{HttpMetrics, track_requests};
pub use ops::{Check, Readiness, ops_router};
pub use wire::MAX_HEADER_BYTES;

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
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a stopping server goes on answering, with `Connection: close` on every response, before it
/// closes its idle connections. A client that is using a keep-alive connection moves to a new one (and so
/// to another replica) instead of sending its next request into a connection that is being closed.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// How long a client may take to send a request's headers, and how long a keep-alive connection may sit
/// idle: a socket that sends half a request line is closed after this, and holds nothing for longer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once; beyond it a new connection gets an immediate 503 with
/// `Retry-After` and is closed, so that load is shed instead of queued and the process keeps file
/// descriptors to spare. Fewer where the file descriptor limit is lower (see [`connection_bound`]).
pub const MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept for everything but client connections: database pools, the broker, logs, the
/// listener itself, and the shed connections that are being answered.
const RESERVED_FILE_DESCRIPTORS: u64 = 256;

/// How many connections a process whose soft `RLIMIT_NOFILE` is `nofile` can serve and still accept (and
/// shed) one more: a bound above the limit would let `accept` fail with EMFILE before shedding starts.
pub fn connection_bound(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(RESERVED_FILE_DESCRIPTORS).max(1);
    usize::try_from(usable).unwrap_or(usize::MAX).min(MAX_CONNECTIONS)
}

/// Raises the soft file descriptor limit to the hard one (runtimes often leave it at 1 024) and returns
/// the connection bound it allows.
fn raise_file_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(nofile) => {
            let bound = connection_bound(nofile);
            if bound < MAX_CONNECTIONS {
                tracing::warn!(
                    nofile,
                    bound,
                    "the file descriptor limit allows fewer connections than {MAX_CONNECTIONS}"
                );
            }
            bound
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the file descriptor limit");
            connection_bound(1024)
        }
    }
}

/// Serves `router` until `shutdown` is cancelled, drains for [`SHUTDOWN_DRAIN`], then stops accepting and
/// lets in-flight requests finish. HTTP/1.1, within [`HEADER_READ_TIMEOUT`], [`MAX_HEADER_BYTES`] and
/// [`MAX_CONNECTIONS`] (an API's routes also within [`REQUEST_TIMEOUT`]); hyper's own answers to
/// requests that do not parse carry the JSON error shape too.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    let draining = Arc::new(AtomicBool::new(false));
    let router = router.layer(middleware::from_fn_with_state(draining.clone(), close_when_draining));
    let mut connections = http1::Builder::new();
    connections.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_header_size(MAX_HEADER_BYTES);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(raise_file_limit()));
    let stop_accepting = async {
        shutdown.cancelled().await;
        draining.store(true, Ordering::Relaxed);
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    tokio::pin!(stop_accepting);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait instead of spinning; a failed handshake is harmless.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop_accepting => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(shed(stream));
            continue;
        };
        drop(stream.set_nodelay(true));
        let service = TowerToHyperService::new(router.clone());
        let stream = TokioIo::new(wire::JsonParseErrors::new(stream));
        let connection = graceful.watch(connections.serve_connection(stream, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A listener on `address`; an error names it.
pub async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))
}

/// Serves an API and its admin port ([`ops_router`]: `/healthz`, `/readyz`, `/metrics`) until `shutdown`,
/// each as [`serve`] does. Separate ports let a NetworkPolicy open the API to its clients and the admin
/// port only to monitoring: the metrics tell business figures (orders placed, events published).
pub async fn serve_with_admin(
    api: (TcpListener, Router),
    admin: (TcpListener, Router),
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (api, admin) = tokio::join!(serve(api.0, api.1, shutdown.clone()), serve(admin.0, admin.1, shutdown));
    api.and(admin)
}

/// The answer to a connection over [`MAX_CONNECTIONS`], written at once; the connection is then closed.
async fn shed(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"overloaded","message":"too many connections; retry later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    drop(tokio::time::timeout(Duration::from_secs(1), stream.write_all(response.as_bytes())).await);
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

    /// [`serve`] with only `/healthz`, on a free port: its address, what stops it, and its task.
    async fn healthz_server() -> (std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>)
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, shutdown.clone()));
        (address, shutdown, server)
    }

    #[tokio::test]
    async fn a_stopping_server_tells_keep_alive_clients_to_go_before_it_closes() {
        let (address, shutdown, server) = healthz_server().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let before = get(&mut stream).await;
        assert!(before.starts_with("http/1.1 200") && !before.contains("connection: close"), "{before}");
        shutdown.cancel();
        // The same keep-alive connection: still answered, and told to close.
        let during = get(&mut stream).await;
        assert!(during.starts_with("http/1.1 200") && during.contains("connection: close"), "{during}");
        server.await.unwrap().unwrap();
    }

    /// Sockets that send half a request line, as many as the server takes: a connection beyond them gets
    /// an immediate 503 with `Retry-After`; after the header timeout they are closed, and the server
    /// answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_open_connections_are_shed_beyond_the_bound_and_closed_after_the_header_timeout() {
        let (address, shutdown, server) = healthz_server().await;
        let mut stalled = Vec::with_capacity(MAX_CONNECTIONS);
        for _ in 0..MAX_CONNECTIONS {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(b"GET /healthz HT").await.unwrap();
            stalled.push(stream);
        }
        let opened = tokio::time::Instant::now();
        // The server takes them in the order they came: wait until the last one holds a slot.
        let shed = loop {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let answer = get(&mut stream).await;
            if answer.starts_with("http/1.1 503") {
                break answer;
            }
            assert!(answer.starts_with("http/1.1 200"), "{answer}");
            assert!(opened.elapsed() < HEADER_READ_TIMEOUT, "the stalled connections never filled the server");
        };
        assert!(shed.contains("retry-after: 1") && shed.contains(r#""error":"overloaded""#), "{shed}");

        // The header timeout closes every stalled connection (a read sees the end of the stream)...
        for stream in stalled.iter_mut().step_by(97) {
            let mut buffer = [0; 64];
            let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, stream.read(&mut buffer)).await;
            assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "a stalled connection outlived the header timeout");
        }
        assert!(opened.elapsed() >= HEADER_READ_TIMEOUT / 2, "closed before the client had its time");
        // ...and the server answers again.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let answer = get(&mut stream).await;
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_connection_bound_leaves_file_descriptors_for_the_rest_of_the_process() {
        assert_eq!(connection_bound(1024), 768, "a runtime's default soft limit");
        assert_eq!(connection_bound(20_000), MAX_CONNECTIONS);
        assert_eq!(connection_bound(100), 1, "some connection is always served");
    }

    /// A client that writes its whole body before it reads, as Python's urllib does, gets the 413 that
    /// was answered before the body was read, not a connection reset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_given_before_the_body_was_read_reaches_a_client_that_sends_it_all_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router =
            Router::new().route("/upload", axum::routing::post(|| async { axum::http::StatusCode::PAYLOAD_TOO_LARGE }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, shutdown.clone()));
        let body = vec![b'x'; 8 * 1024 * 1024];
        for _ in 0..3 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let head = format!("POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&body).await.expect("the server reads the rest of the body before it closes");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.expect("the answer, then the end of the stream, and no reset");
            let answer = String::from_utf8_lossy(&answer).to_lowercase();
            assert!(answer.starts_with("http/1.1 413"), "{answer}");
        }
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
