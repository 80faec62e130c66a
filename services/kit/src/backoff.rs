//! Exponential backoff with jitter, for reconnect loops.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial }
    }

    /// The next delay: doubles each time up to `max`, with up to 25% random jitter so that many
    /// clients that lost the same broker do not come back in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.mul_f64(0.25 * f64::from(rand_fraction()));
        base + jitter
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps for the next delay; returns `false` if `shutdown` came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// A fraction in [0, 1) from the clock's low bits; jitter needs no stronger randomness.
fn rand_fraction() -> f32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    (nanos % 1000) as f32 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        let within =
            |d: Duration, base: u64| d >= Duration::from_millis(base) && d <= Duration::from_millis(base * 5 / 4);
        assert!(
            within(delays[0], 100) && within(delays[1], 200) && within(delays[2], 400) && within(delays[3], 400),
            "{delays:?}"
        );
        backoff.reset();
        assert!(within(backoff.next_delay(), 100));
    }
}
