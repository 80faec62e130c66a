//! The operator's own metrics: reconciles, errors by kind, reconcile duration, and per-pipeline lag,
//! pending events, queue depth and consumer replicas (labelled by namespace and name: one series per
//! pipeline, a bounded number).

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::crd::{AnalyticsPipelineStatus, VerifyOutcome};

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    lag: GaugeVec,
    pending: IntGaugeVec,
    depth: IntGaugeVec,
    consumers: IntGaugeVec,
    max_consumers: IntGaugeVec,
    consistent: IntGaugeVec,
}

impl Metrics {
    /// Registers every series; the error counter starts at 0 for each of `error_kinds`.
    pub fn register(registry: &Registry, error_kinds: &[&str]) -> prometheus::Result<Self> {
        let pipeline = &["namespace", "name"];
        let metrics = Self {
            reconciles: IntCounter::new("operator_reconciles_total", "Reconcile passes.")?,
            failures: IntCounterVec::new(
                Opts::new("operator_reconcile_errors_total", "Failed reconcile passes, by kind."),
                &["kind"],
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new("operator_reconcile_duration_seconds", "Duration of one reconcile pass.")
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            lag: GaugeVec::new(Opts::new("pipeline_lag_seconds", "Read-model lag from sync-status."), pipeline)?,
            pending: IntGaugeVec::new(
                Opts::new("pipeline_pending_events", "Events not yet applied, from sync-status."),
                pipeline,
            )?,
            depth: IntGaugeVec::new(Opts::new("pipeline_queue_depth", "Ready messages on order-events."), pipeline)?,
            consumers: IntGaugeVec::new(
                Opts::new("pipeline_consumer_replicas", "Consumers the operator runs."),
                pipeline,
            )?,
            max_consumers: IntGaugeVec::new(
                Opts::new(
                    "pipeline_consumer_max_replicas",
                    "The most consumers the spec allows (the fixed count, if set).",
                ),
                pipeline,
            )?,
            consistent: IntGaugeVec::new(
                Opts::new(
                    "pipeline_read_model_consistent",
                    "1 when the last verify found the read model equal to the write side, 0 on drift; absent before a verify finished, or when the last one failed.",
                ),
                pipeline,
            )?,
        };
        for kind in error_kinds {
            metrics.failures.with_label_values(&[*kind]);
        }
        registry.register(Box::new(metrics.reconciles.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.depth.clone()))?;
        registry.register(Box::new(metrics.consumers.clone()))?;
        registry.register(Box::new(metrics.max_consumers.clone()))?;
        registry.register(Box::new(metrics.consistent.clone()))?;
        Ok(metrics)
    }

    /// Mirrors a pipeline's status (and its consumer ceiling) into its gauges. A figure the status does
    /// not know has no series, rather than the last value it had.
    pub fn observe(&self, namespace: &str, name: &str, status: &AnalyticsPipelineStatus, max_consumers: i32) {
        let labels = [namespace, name];
        self.max_consumers.with_label_values(&labels).set(i64::from(max_consumers));
        match status.lag_seconds {
            Some(lag) => self.lag.with_label_values(&labels).set(lag),
            None => drop(self.lag.remove_label_values(&labels)),
        }
        match status.pending_events {
            Some(pending) => self.pending.with_label_values(&labels).set(pending),
            None => drop(self.pending.remove_label_values(&labels)),
        }
        match status.queue_depth {
            Some(depth) => self.depth.with_label_values(&labels).set(depth),
            None => drop(self.depth.remove_label_values(&labels)),
        }
        if let Some(consumers) = status.consumer_replicas {
            self.consumers.with_label_values(&labels).set(i64::from(consumers));
        }
        match status.read_model.as_ref().and_then(|r| r.last_verify.as_ref()).map(|run| run.outcome) {
            Some(VerifyOutcome::Consistent) => self.consistent.with_label_values(&labels).set(1),
            Some(VerifyOutcome::Drift) => self.consistent.with_label_values(&labels).set(0),
            Some(VerifyOutcome::Failed) | None => drop(self.consistent.remove_label_values(&labels)),
        }
    }

    /// Drops a deleted pipeline's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = [namespace, name];
        drop(self.lag.remove_label_values(&labels));
        drop(self.pending.remove_label_values(&labels));
        drop(self.depth.remove_label_values(&labels));
        drop(self.consumers.remove_label_values(&labels));
        drop(self.max_consumers.remove_label_values(&labels));
        drop(self.consistent.remove_label_values(&labels));
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, Registry, TextEncoder};

    use super::Metrics;
    use crate::crd::{AnalyticsPipelineStatus, ReadModelStatus, VerifyOutcome, VerifyRun};

    #[test]
    fn every_documented_series_is_exported_and_a_deleted_pipeline_is_forgotten() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry, &["api", "client"]).unwrap();
        metrics.reconciles.inc();
        metrics.failures.with_label_values(&["api"]).inc();
        metrics.duration.observe(0.1);
        let status = AnalyticsPipelineStatus {
            lag_seconds: Some(1.5),
            pending_events: Some(7),
            queue_depth: Some(3),
            consumer_replicas: Some(2),
            read_model: Some(ReadModelStatus {
                last_verify: Some(VerifyRun {
                    job: "shop-verify-1".into(),
                    finished_at: None,
                    outcome: VerifyOutcome::Drift,
                    message: "drift: 1 keys differ".into(),
                }),
                rebuild: None,
            }),
            ..AnalyticsPipelineStatus::default()
        };
        metrics.observe("prod", "shop", &status, 10);
        let text = |registry: &Registry| {
            let mut buffer = Vec::new();
            TextEncoder::new().encode(&registry.gather(), &mut buffer).unwrap();
            String::from_utf8(buffer).unwrap()
        };
        let exported = text(&registry);
        for series in [
            "operator_reconciles_total 1",
            "operator_reconcile_errors_total{kind=\"api\"} 1",
            "operator_reconcile_errors_total{kind=\"client\"} 0",
            "operator_reconcile_duration_seconds_count 1",
            "pipeline_lag_seconds{name=\"shop\",namespace=\"prod\"} 1.5",
            "pipeline_pending_events{name=\"shop\",namespace=\"prod\"} 7",
            "pipeline_queue_depth{name=\"shop\",namespace=\"prod\"} 3",
            "pipeline_consumer_replicas{name=\"shop\",namespace=\"prod\"} 2",
            "pipeline_consumer_max_replicas{name=\"shop\",namespace=\"prod\"} 10",
            "pipeline_read_model_consistent{name=\"shop\",namespace=\"prod\"} 0",
        ] {
            assert!(exported.contains(series), "missing {series}:\n{exported}");
        }
        // A backlog the status no longer knows (the broker is down) leaves no stale value behind.
        let unknown = AnalyticsPipelineStatus { pending_events: None, queue_depth: None, ..status };
        metrics.observe("prod", "shop", &unknown, 10);
        let exported = text(&registry);
        assert!(
            !exported.contains("pipeline_pending_events{") && !exported.contains("pipeline_queue_depth{"),
            "{exported}"
        );
        assert!(exported.contains("pipeline_lag_seconds{name=\"shop\",namespace=\"prod\"} 1.5"));
        metrics.forget("prod", "shop");
        assert!(!text(&registry).contains("name=\"shop\""));
    }
}
