//! Structured logs with `tracing`: human-readable on a terminal, JSON lines everywhere else.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Installs the global subscriber, logging to stdout. `RUST_LOG` filters; the default is `info`.
pub fn init() {
    install(std::io::stdout().is_terminal(), std::io::stdout);
}

/// The same, logging to stderr: for commands whose stdout is their result.
pub fn init_on_stderr() {
    install(std::io::stderr().is_terminal(), std::io::stderr);
}

fn install<W>(terminal: bool, writer: fn() -> W)
where
    W: std::io::Write + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let result = if terminal {
        registry.with(layer).try_init()
    } else {
        registry.with(layer.json().flatten_event(true).with_current_span(false)).try_init()
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
