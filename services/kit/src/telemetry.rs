//! Structured logs with `tracing`: human-readable on a terminal, JSON lines everywhere else.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Installs the global subscriber. `RUST_LOG` filters; the default is `info`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if std::io::stdout().is_terminal() {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false)).try_init()
    };
    // A second call (several apps in one test binary) keeps the first subscriber.
    drop(result);
}

/// For test binaries: logs only when `TEST_LOG` is set, so a passing run stays quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}
