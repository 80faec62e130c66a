//! One [`CancellationToken`] fans the shutdown signal out to the HTTP server and every background task.

use tokio_util::sync::CancellationToken;

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
