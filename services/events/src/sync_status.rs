//! The query API's `GET /api/analytics/sync-status`: served by the query service, read by the operator
//! for the pipeline's status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::timestamp;

/// How far the read model is behind the write side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatusResponse {
    /// occurredAt of the newest applied event.
    #[serde(with = "timestamp::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_processed_event_timestamp: Option<DateTime<Utc>>,
    /// How far the read model is behind: 0 when everything committed is applied; otherwise at least
    /// the age of the oldest pending event. Null before the first watermark.
    pub lag_seconds: Option<f64>,
    /// Events not yet applied: in the outbox plus on the queues. Null when either is unknown.
    pub pending_events: Option<i64>,
    /// The outbox backlog, as the newest watermark saw it. Null when there is no fresh watermark (the
    /// relay or the broker is down): the query service cannot know it then.
    pub outbox_pending_events: Option<i64>,
    /// Ready messages on both queues; null if the broker did not answer.
    pub queue_depth: Option<i64>,
    /// Age of the newest watermark from the relay.
    pub watermark_age_seconds: Option<f64>,
    pub status: SyncState,
}

/// The read model's state, as sync-status names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Everything committed on the write side is applied.
    InSync,
    /// Events are pending, and the relay reports in.
    CatchingUp,
    /// No fresh watermark: the relay, the broker or the consumer is not keeping up; the lag grows.
    Stale,
    /// No watermark has ever been applied; also what a reader makes of a state it does not know yet.
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_response_has_the_documented_camel_case_fields_and_snake_case_states() {
        let response = SyncStatusResponse {
            last_processed_event_timestamp: None,
            lag_seconds: Some(0.25),
            pending_events: Some(3),
            outbox_pending_events: Some(1),
            queue_depth: Some(2),
            watermark_age_seconds: Some(0.1),
            status: SyncState::CatchingUp,
        };
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json,
            json!({"lastProcessedEventTimestamp": null, "lagSeconds": 0.25, "pendingEvents": 3, "outboxPendingEvents": 1,
                   "queueDepth": 2, "watermarkAgeSeconds": 0.1, "status": "catching_up"})
        );
        assert_eq!(serde_json::from_value::<SyncStatusResponse>(json).unwrap(), response);
    }

    #[test]
    fn a_state_this_build_does_not_know_reads_as_unknown() {
        assert_eq!(serde_json::from_value::<SyncState>(json!("rebuilding")).unwrap(), SyncState::Unknown);
    }
}
