//! How far behind the read model is.
//!
//! The relay sends a watermark down each queue behind the events it has published: its time (`asOf`),
//! and the outbox backlog it saw then. The consumer records the newest one it has applied per stream,
//! so once a watermark is applied, every event that occurred before `asOf` is either in the read model
//! or still in the outbox, counted and dated by the watermark. This module adds the queue depths and
//! turns that into a lag:
//!
//! - **caught up** (the newest watermark of every stream is fresh, saw an empty outbox, and the queues
//!   are empty): lag 0, however long the pipeline has been idle;
//! - otherwise the stream is complete up to `asOf`, or up to the oldest pending outbox event if that
//!   is older, and the lag is the time since then. That is at least the age of the oldest event still
//!   pending, in the outbox or on a queue, and it keeps growing while the relay or the broker is down
//!   (no fresh watermark arrives), which is the truth the reader needs.

use std::time::Duration;

use analytics_events::{Stream, SyncState, SyncStatusResponse, Topology};
use chrono::{DateTime, Utc};
use lapin::{Channel, Connection, options::QueueDeclareOptions, types::FieldTable};
use secrecy::SecretString;
use tokio::sync::Mutex;

use crate::read_model::StreamProgress;

/// The relay sends a watermark at least every second; one older than this means it cannot.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// Combines the recorded progress of both streams with the queue depths (ready messages on both queues,
/// `None` if the broker did not answer).
pub fn assess(now: DateTime<Utc>, streams: &[StreamProgress], queue_depth: Option<i64>) -> SyncStatusResponse {
    let last_processed_event_timestamp = streams.iter().filter_map(|s| s.last_event_occurred_at).max();
    let newest = streams.iter().filter(|s| s.watermark_as_of.is_some()).max_by_key(|s| s.watermark_as_of);
    let since = |at: DateTime<Utc>| (now - at).to_std().unwrap_or_default();
    let both_reported = Stream::ALL
        .iter()
        .all(|stream| streams.iter().any(|s| s.stream == stream.as_str() && s.watermark_as_of.is_some()));
    let oldest_watermark = streams.iter().filter_map(|s| s.watermark_as_of).min().unwrap_or(now);
    let fresh = both_reported && since(oldest_watermark) <= STALE_AFTER;
    // The outbox backlog is known only while both streams' watermarks are fresh (an old one tells what it
    // was, not what it is) and the broker answers: a broker that does not has stopped the relay too, and
    // the outbox grows behind the last watermark's figure. So the figure is null whenever the status is
    // stale or unknown, and as soon as this service finds the broker gone.
    let outbox_pending = newest.filter(|_| fresh && queue_depth.is_some()).map(|s| s.outbox_pending);
    let pending_events = outbox_pending.zip(queue_depth).map(|(outbox, queues)| outbox + queues);
    // Seconds on the wire, to the millisecond.
    let seconds = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;

    let Some(newest) = newest.filter(|_| both_reported) else {
        return SyncStatusResponse {
            last_processed_event_timestamp,
            lag_seconds: None,
            pending_events,
            outbox_pending_events: outbox_pending,
            queue_depth,
            watermark_age_seconds: newest.and_then(|s| s.watermark_as_of).map(|at| seconds(since(at))),
            status: SyncState::Unknown,
        };
    };
    // Each stream is complete up to its watermark, or its oldest pending outbox event if older.
    let complete_until = streams
        .iter()
        .filter_map(|s| {
            let as_of = s.watermark_as_of?;
            Some(s.outbox_oldest_pending_at.filter(|_| s.outbox_pending > 0).map_or(as_of, |oldest| oldest.min(as_of)))
        })
        .min()
        .unwrap_or(now);
    let nothing_pending = streams.iter().all(|s| s.outbox_pending == 0) && queue_depth == Some(0);
    let (lag, state) = if !fresh {
        (since(complete_until), SyncState::Stale)
    } else if nothing_pending {
        (Duration::ZERO, SyncState::InSync)
    } else {
        (since(complete_until), SyncState::CatchingUp)
    };
    SyncStatusResponse {
        last_processed_event_timestamp,
        lag_seconds: Some(seconds(lag)),
        pending_events,
        outbox_pending_events: outbox_pending,
        queue_depth,
        watermark_age_seconds: newest.watermark_as_of.map(|at| seconds(since(at))),
        status: state,
    }
}

/// Reads queue depths with a passive declare, on a connection it keeps and replaces when it breaks.
pub struct QueueDepths {
    url: SecretString,
    topology: Topology,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl QueueDepths {
    pub fn new(url: SecretString, topology: Topology) -> Self {
        Self { url, topology, channel: Mutex::new(None) }
    }

    /// Ready messages on both event queues, or `None` if the broker does not answer within a second.
    pub async fn total(&self) -> Option<i64> {
        match tokio::time::timeout(Duration::from_secs(1), self.read()).await {
            Ok(Ok(depth)) => Some(depth),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot read queue depths");
                *self.channel.lock().await = None;
                None
            }
            Err(_) => {
                *self.channel.lock().await = None;
                None
            }
        }
    }

    async fn read(&self) -> lapin::Result<i64> {
        let mut guard = self.channel.lock().await;
        if guard.as_ref().is_none_or(|(connection, _)| !connection.status().connected()) {
            let connection = analytics_kit::amqp::connect(&self.url, "query-service sync-status").await?;
            let channel = connection.create_channel().await?;
            *guard = Some((connection, channel));
        }
        let (_, channel) = guard.as_ref().expect("set above");
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut total = 0;
        for stream in Stream::ALL {
            let declared =
                channel.queue_declare(self.topology.queue(stream).into(), passive, FieldTable::default()).await?;
            total += i64::from(declared.message_count());
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn stream(
        name: &str,
        watermark_ago_ms: i64,
        pending: i64,
        oldest_ago_ms: Option<i64>,
        now: DateTime<Utc>,
    ) -> StreamProgress {
        StreamProgress {
            stream: name.into(),
            last_event_occurred_at: Some(now - TimeDelta::milliseconds(watermark_ago_ms + 50)),
            watermark_as_of: Some(now - TimeDelta::milliseconds(watermark_ago_ms)),
            outbox_pending: pending,
            outbox_oldest_pending_at: oldest_ago_ms.map(|ms| now - TimeDelta::milliseconds(ms)),
        }
    }

    #[test]
    fn an_idle_pipeline_that_has_applied_everything_has_zero_lag_however_old_its_last_event() {
        let now = Utc::now();
        let mut streams = vec![stream("orders", 800, 0, None, now), stream("products", 300, 0, None, now)];
        streams[0].last_event_occurred_at = Some(now - TimeDelta::hours(3));
        let status = assess(now, &streams, Some(0));
        assert_eq!((status.lag_seconds, status.status, status.pending_events), (Some(0.0), SyncState::InSync, Some(0)));
        assert_eq!(status.last_processed_event_timestamp, Some(now - TimeDelta::milliseconds(350)));
    }

    #[test]
    fn events_waiting_in_the_outbox_make_the_lag_at_least_the_oldest_ones_age() {
        let now = Utc::now();
        let streams = [stream("orders", 200, 40, Some(7_000), now), stream("products", 200, 40, Some(7_000), now)];
        let status = assess(now, &streams, Some(0));
        assert_eq!(status.status, SyncState::CatchingUp);
        assert!(status.lag_seconds.unwrap() >= 7.0, "{status:?}");
        assert_eq!(status.pending_events, Some(40));
    }

    #[test]
    fn messages_on_a_queue_count_as_pending_and_the_lag_runs_from_the_applied_watermark() {
        let now = Utc::now();
        let streams = [stream("orders", 2_500, 0, None, now), stream("products", 100, 0, None, now)];
        let status = assess(now, &streams, Some(1_200));
        assert_eq!((status.status, status.pending_events), (SyncState::CatchingUp, Some(1_200)));
        assert!(status.lag_seconds.unwrap() >= 2.5);
    }

    #[test]
    fn without_fresh_watermarks_the_lag_keeps_growing_and_the_state_is_stale() {
        let now = Utc::now();
        let streams = [stream("orders", 60_000, 0, None, now), stream("products", 60_000, 0, None, now)];
        let status = assess(now, &streams, None);
        assert_eq!(status.status, SyncState::Stale);
        assert!(status.lag_seconds.unwrap() >= 60.0);
    }

    /// The broker died with an empty outbox behind the last watermark, and 30 000 events have piled up
    /// since: the old watermark's 0 is no longer the truth, so the backlog is unknown, not 0.
    #[test]
    fn without_a_fresh_watermark_the_backlog_is_unknown_not_zero() {
        let now = Utc::now();
        let streams = [stream("orders", 8_000, 0, None, now), stream("products", 8_000, 0, None, now)];
        let status = assess(now, &streams, Some(0));
        assert_eq!(status.status, SyncState::Stale);
        assert_eq!((status.outbox_pending_events, status.pending_events), (None, None));
        // The queues alone are still known.
        assert_eq!(status.queue_depth, Some(0));
        // A fresh watermark makes it known again.
        let streams =
            [stream("orders", 300, 30_007, Some(9_000), now), stream("products", 300, 30_007, Some(9_000), now)];
        let status = assess(now, &streams, Some(12));
        assert_eq!((status.outbox_pending_events, status.pending_events), (Some(30_007), Some(30_019)));
    }

    /// One stream's watermark is fresh, the other's is not (a consumer just restarted): the status is
    /// stale, and no figure says otherwise.
    #[test]
    fn a_stale_answer_carries_no_backlog_figure() {
        let now = Utc::now();
        let streams = [stream("orders", 200, 3, None, now), stream("products", 9_000, 0, None, now)];
        let status = assess(now, &streams, Some(4));
        assert_eq!(status.status, SyncState::Stale);
        assert_eq!((status.outbox_pending_events, status.pending_events), (None, None));
    }

    /// The broker stops answering: the relay cannot publish, so the outbox figure of the last watermark,
    /// however fresh, is no longer the truth.
    #[test]
    fn a_broker_that_does_not_answer_makes_the_backlog_unknown_at_once() {
        let now = Utc::now();
        let streams = [stream("orders", 200, 2, Some(150), now), stream("products", 200, 2, Some(150), now)];
        let status = assess(now, &streams, None);
        assert_eq!((status.outbox_pending_events, status.pending_events, status.queue_depth), (None, None, None));
        assert_ne!(status.status, SyncState::InSync);
    }

    #[test]
    fn before_any_watermark_the_lag_is_unknown() {
        let now = Utc::now();
        let status = assess(now, &[stream("orders", 100, 0, None, now)], Some(0));
        assert_eq!((status.lag_seconds, status.status), (None, SyncState::Unknown));
        assert_eq!(assess(now, &[], Some(3)).pending_events, None, "no watermark, no outbox figure");
    }
}
