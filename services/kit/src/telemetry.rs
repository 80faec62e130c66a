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

/// Lets a recurring log line through at most once per period, and tells how many it held back since:
/// a fault that fails every request (a database outage, say) is logged when it starts and then now and
/// then, while the metrics count every occurrence.
pub struct Throttle {
    period: std::time::Duration,
    /// When a line last went through, and how many were held back since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(period: std::time::Duration) -> Self {
        Self { period, state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(held back)` if this occurrence is to be logged, `None` if it is held back.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held_back) = &mut *state;
        let now = std::time::Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < self.period) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_admits_one_occurrence_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(std::time::Duration::from_millis(200));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!((0..5).filter_map(|_| throttle.admit()).count(), 0);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(throttle.admit(), Some(5), "the next line tells how many were held back");
    }
}
