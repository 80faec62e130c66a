//! What the reconciler needs to know from inside the pipeline: the depth of `order-events`, and the
//! query service's sync-status. Behind a trait, so that reconciler tests can script the answers.

use futures::future::BoxFuture;

use crate::crd::AnalyticsPipeline;

/// The query service's view of how far behind the read model is.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    pub lag_seconds: Option<f64>,
    pub pending_events: i64,
    /// occurredAt of the newest applied event, as RFC 3339.
    pub last_processed_event: Option<String>,
}

pub trait Observer: Send + Sync {
    /// Ready messages on the pipeline's `order-events` queue; `None` if the broker cannot be asked.
    fn queue_depth<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<i64>>;

    /// The query service's sync-status; `None` if it does not answer.
    fn sync_status<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<SyncStatus>>;
}
