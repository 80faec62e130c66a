//! When the relay sends watermarks and how long it sleeps between polls: pure values over time, so
//! the rules are tested without a clock.

use std::time::{Duration, Instant};

/// Watermarks follow batches at most this often, so that under load they add little traffic.
pub const WATERMARK_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// And an idle relay still sends one this often, so the read side can tell "idle" from "stuck".
pub const WATERMARK_IDLE_INTERVAL: Duration = Duration::from_secs(1);
/// The first idle poll after activity; it doubles up to the relay's poll interval.
pub const ADAPTIVE_POLL_START: Duration = Duration::from_millis(5);

/// Decides when a watermark is due.
///
/// - After a published batch: if none was sent in the last [`WATERMARK_MIN_INTERVAL`].
/// - While idle: every [`WATERMARK_IDLE_INTERVAL`]; but if a batch went out since the last watermark,
///   as soon as the minimum interval allows, so the read side learns in ~0.1 s (not 1 s) that the
///   backlog is empty.
#[derive(Debug, Clone, Default)]
pub struct WatermarkSchedule {
    last_sent: Option<Instant>,
    published_since: bool,
}

impl WatermarkSchedule {
    /// A batch was published and marked at `now`: is a watermark due?
    pub fn due_after_batch(&mut self, now: Instant) -> bool {
        self.published_since = true;
        self.elapsed(now, WATERMARK_MIN_INTERVAL)
    }

    /// The relay found nothing to publish at `now`: is a watermark due?
    pub fn due_when_idle(&self, now: Instant) -> bool {
        let interval = if self.published_since { WATERMARK_MIN_INTERVAL } else { WATERMARK_IDLE_INTERVAL };
        self.elapsed(now, interval)
    }

    /// A watermark was sent at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.published_since = false;
    }

    fn elapsed(&self, now: Instant, interval: Duration) -> bool {
        self.last_sent.is_none_or(|at| now.saturating_duration_since(at) >= interval)
    }
}

/// Adaptive polling for rows the relay is not told about (another replica's writes, expired leases):
/// fast right after activity, doubling while idle up to `max`.
#[derive(Debug, Clone)]
pub struct IdlePoll {
    next: Duration,
    max: Duration,
}

impl IdlePoll {
    pub fn new(max: Duration) -> Self {
        Self { next: ADAPTIVE_POLL_START.min(max), max }
    }

    /// Activity: the next idle wait starts short again.
    pub fn reset(&mut self) {
        self.next = ADAPTIVE_POLL_START.min(self.max);
    }

    /// How long to wait now; the wait after it is twice as long, up to `max`.
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_watermark_is_due_at_once() {
        let t0 = Instant::now();
        assert!(WatermarkSchedule::default().due_when_idle(t0));
        assert!(WatermarkSchedule::default().due_after_batch(t0));
    }

    #[test]
    fn under_load_watermarks_follow_batches_at_most_every_100_ms() {
        let t0 = Instant::now();
        let mut schedule = WatermarkSchedule::default();
        schedule.sent(t0);
        assert!(!schedule.due_after_batch(t0 + ms(40)));
        assert!(!schedule.due_after_batch(t0 + ms(99)));
        assert!(schedule.due_after_batch(t0 + ms(100)));
    }

    #[test]
    fn an_idle_relay_sends_one_a_second() {
        let t0 = Instant::now();
        let mut schedule = WatermarkSchedule::default();
        schedule.sent(t0);
        assert!(!schedule.due_when_idle(t0 + ms(500)));
        assert!(schedule.due_when_idle(t0 + ms(1_000)));
    }

    #[test]
    fn a_batch_held_back_by_the_interval_gets_its_watermark_as_soon_as_the_relay_is_idle() {
        let t0 = Instant::now();
        let mut schedule = WatermarkSchedule::default();
        schedule.sent(t0);
        assert!(!schedule.due_after_batch(t0 + ms(30)), "too soon after the last one");
        assert!(!schedule.due_when_idle(t0 + ms(60)));
        assert!(schedule.due_when_idle(t0 + ms(100)), "idle, and the batch is not covered yet: 100 ms, not 1 s");
        schedule.sent(t0 + ms(100));
        assert!(!schedule.due_when_idle(t0 + ms(300)), "covered: back to once a second");
    }

    #[test]
    fn idle_polls_double_from_5_ms_up_to_the_limit_and_restart_after_activity() {
        let mut poll = IdlePoll::new(ms(30));
        let waits: Vec<_> = (0..5).map(|_| poll.wait()).collect();
        assert_eq!(waits, [ms(5), ms(10), ms(20), ms(30), ms(30)]);
        poll.reset();
        assert_eq!(poll.wait(), ms(5));
        assert_eq!(IdlePoll::new(ms(2)).wait(), ms(2), "a limit below the start caps it");
    }
}
