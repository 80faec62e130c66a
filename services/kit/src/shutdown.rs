//! One [`CancellationToken`] fans the shutdown signal out to the HTTP server and every background task,
//! and [`bounded`] keeps a stop within [`STOP_BUDGET`].

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// How long a service may take to stop once asked, within Kubernetes' default grace period of 30 s (the
/// API services' preStop sleep comes out of it too): in-flight requests and batches finish, connections
/// close. A broker or database that stops answering meanwhile must not hold the process until SIGKILL.
pub const STOP_BUDGET: Duration = Duration::from_secs(20);

/// Runs `service` (a whole service's life) to its end, or until [`STOP_BUDGET`] after `shutdown`: then it
/// says what it gave up on waiting for, and returns `Ok` (a stop, if a late one: the process exits;
/// whatever was unacked goes back to its queue, whatever was uncommitted rolls back).
pub async fn bounded<E>(shutdown: &CancellationToken, service: impl Future<Output = Result<(), E>>) -> Result<(), E> {
    // On the heap: a service's future is deep, and the caller's would be too deep for the compiler.
    let service = Box::pin(service);
    let overrun = async {
        shutdown.cancelled().await;
        tokio::time::sleep(STOP_BUDGET).await;
    };
    tokio::select! {
        done = service => done,
        () = overrun => {
            tracing::warn!(
                budget_seconds = STOP_BUDGET.as_secs(),
                "did not stop within the budget (a broker or database that no longer answers?); stopping now"
            );
            Ok(())
        }
    }
}

/// A token that is cancelled on SIGTERM or SIGINT (Ctrl-C). The handlers are in place when it returns,
/// so a signal that comes while the process is still starting stops it cleanly too, instead of killing
/// it as the default action would.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let signal = signal_received();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
fn signal_received() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot listen for SIGTERM and SIGINT");
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn signal_received() -> impl std::future::Future<Output = ()> {
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
