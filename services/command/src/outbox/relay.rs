//! The relay moves outbox rows to RabbitMQ.
//!
//! It claims a batch by leasing rows (`FOR UPDATE SKIP LOCKED`, so concurrent relays take disjoint
//! batches), publishes it with publisher confirms, and marks the rows published only once every message
//! is confirmed. No row lock or transaction is held while it talks to the broker: a relay that dies
//! between publish and mark leaves its lease to expire, and the rows are published again (at least once;
//! the consumer's idempotency absorbs the repeat). Handlers wake it right after their commit, and it
//! polls slowly as a fallback for rows written by other processes and for expired leases.
//!
//! After its batches (at most every [`WATERMARK_MIN_INTERVAL`]; one that the interval held back follows as
//! soon as it allows) and once a second when idle, it sends a [`Watermark`] with the outbox backlog down
//! each queue, which is how the read side knows its lag.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use analytics_events::{EventType, Topology, Watermark};
use analytics_kit::backoff::Backoff;
use chrono::{DateTime, Utc};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use secrecy::SecretString;
use sqlx::{FromRow, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{PublishError, Publisher};
use crate::config::RelayConfig;

/// Watermarks follow batches at most this often, so that under load they add little traffic.
const WATERMARK_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// And an idle relay still sends one this often, so the read side can tell "idle" from "stuck".
pub const WATERMARK_IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// The first idle poll after activity; it doubles up to the configured poll interval.
const ADAPTIVE_POLL_START: Duration = Duration::from_millis(5);

/// One outbox row on its way to the broker.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The exact message body stored at write time.
    pub body: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ClaimedRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    body: String,
    occurred_at: DateTime<Utc>,
}

/// Lets request handlers wake the relay after a commit, and tells them whether it reaches the broker.
#[derive(Clone, Default)]
pub struct RelayWaker {
    notify: Arc<Notify>,
    connected: Arc<AtomicBool>,
}

impl RelayWaker {
    /// Wakes the relay; a wake-up while it is busy is remembered, never lost.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    pub fn broker_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct RelayMetrics {
    published: IntCounterVec,
    failures: IntCounter,
    batch_seconds: Histogram,
    publish_lag_seconds: Histogram,
    pending: IntGauge,
    oldest_pending_seconds: Gauge,
}

impl RelayMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let published = IntCounterVec::new(
            Opts::new("outbox_published_total", "Outbox events published and confirmed by the broker, by event type."),
            &["event_type"],
        )?;
        let failures =
            IntCounter::new("outbox_publish_failures_total", "Batches that failed to publish and will be retried.")?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "outbox_publish_duration_seconds",
                "Time to publish one batch and receive every confirm.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let publish_lag_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "outbox_publish_lag_seconds",
                "Time from an event's occurredAt to its confirmed publication.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )?;
        let pending = IntGauge::new("outbox_pending_events", "Outbox events not yet published (the backlog).")?;
        let oldest_pending_seconds = Gauge::new(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox event; 0 when none.",
        )?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(publish_lag_seconds.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(oldest_pending_seconds.clone()))?;
        Ok(Self { published, failures, batch_seconds, publish_lag_seconds, pending, oldest_pending_seconds })
    }
}

pub struct Relay {
    pool: PgPool,
    amqp_url: SecretString,
    topology: Topology,
    batch_size: i64,
    lease: Duration,
    confirm_timeout: Duration,
    poll_interval: Duration,
    retention: Duration,
    waker: RelayWaker,
    metrics: RelayMetrics,
}

impl Relay {
    pub fn new(config: &RelayConfig, registry: &Registry) -> anyhow::Result<Self> {
        let pool = analytics_kit::db::pool(&config.database.url, config.database.max_connections, "command-service")?;
        Ok(Self {
            pool,
            amqp_url: config.amqp_url.clone(),
            topology: Topology::with_prefix(&config.topology_prefix),
            batch_size: config.batch_size.max(1),
            lease: config.lease,
            confirm_timeout: config.confirm_timeout,
            poll_interval: config.poll_interval,
            retention: config.retention,
            waker: RelayWaker::default(),
            metrics: RelayMetrics::register(registry)?,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Publishes until `shutdown`, reconnecting to the broker with backoff whenever it is lost. On
    /// shutdown the batch in flight is published and marked before it returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let housekeeping =
            tokio::spawn(housekeeping(self.pool.clone(), self.metrics.clone(), self.retention, shutdown.clone()));
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            match Publisher::connect(&self.amqp_url, self.topology.clone(), self.confirm_timeout).await {
                Ok(publisher) => {
                    tracing::info!("relay connected to the broker");
                    backoff.reset();
                    self.waker.connected.store(true, Ordering::Relaxed);
                    let outcome = self.pump(&publisher, &shutdown).await;
                    self.waker.connected.store(false, Ordering::Relaxed);
                    publisher.close().await;
                    match outcome {
                        Ok(()) => break,
                        Err(error) => tracing::warn!(%error, "relay lost the broker; events wait in the outbox"),
                    }
                }
                Err(error) => tracing::warn!(%error, "relay cannot reach the broker; events wait in the outbox"),
            }
            if !backoff.wait(&shutdown).await {
                break;
            }
        }
        drop(housekeeping.await);
        tracing::info!("relay stopped");
    }

    /// Claims, publishes and marks batches until shutdown (`Ok`) or a broker failure (`Err`).
    async fn pump(&self, publisher: &Publisher, shutdown: &CancellationToken) -> Result<(), PublishError> {
        let mut database_backoff = Backoff::default();
        let mut last_watermark: Option<Instant> = None;
        // Whether a batch went out after the last watermark: an idle relay then sends the next one as soon
        // as the minimum interval allows, so the read side learns the backlog is empty in ~0.1 s, not 1 s.
        let mut published_since_watermark = false;
        // Adaptive polling for rows this process is not told about (another replica's writes, expired
        // leases): fast right after activity, slowing down to the poll interval while idle.
        let mut idle_wait = ADAPTIVE_POLL_START;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let batch = match self.claim().await {
                Ok(batch) => {
                    database_backoff.reset();
                    batch
                }
                Err(error) => {
                    tracing::warn!(%error, "relay cannot claim outbox rows");
                    if !database_backoff.wait(shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                let due = if published_since_watermark { WATERMARK_MIN_INTERVAL } else { WATERMARK_IDLE_INTERVAL };
                if last_watermark.is_none_or(|at| at.elapsed() >= due) {
                    self.send_watermark(publisher).await?;
                    last_watermark = Some(Instant::now());
                    published_since_watermark = false;
                }
                tokio::select! {
                    () = self.waker.notify.notified() => idle_wait = ADAPTIVE_POLL_START,
                    () = tokio::time::sleep(idle_wait) => idle_wait = (idle_wait * 2).min(self.poll_interval.min(WATERMARK_IDLE_INTERVAL)),
                    () = shutdown.cancelled() => return Ok(()),
                }
                continue;
            }
            idle_wait = ADAPTIVE_POLL_START;
            let started = Instant::now();
            if let Err(error) = publisher.publish(&batch).await {
                self.metrics.failures.inc();
                self.release(&batch).await;
                return Err(error);
            }
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            let now = Utc::now();
            for event in &batch {
                self.metrics.published.with_label_values(&[event.event_type.as_str()]).inc();
                let lag = (now - event.occurred_at).to_std().unwrap_or_default();
                self.metrics.publish_lag_seconds.observe(lag.as_secs_f64());
            }
            if let Err(error) = self.mark_published(&batch).await {
                // The rows stay leased and are published again when the lease ends: a duplicate, not a loss.
                tracing::warn!(%error, rows = batch.len(), "relay cannot mark published rows");
                continue;
            }
            published_since_watermark = true;
            if last_watermark.is_none_or(|at| at.elapsed() >= WATERMARK_MIN_INTERVAL) {
                self.send_watermark(publisher).await?;
                last_watermark = Some(Instant::now());
                published_since_watermark = false;
            }
        }
    }

    /// Reads the backlog and publishes it as a watermark. If the database cannot say, none is sent:
    /// the read side then sees its watermark age and reports itself stale, which is the truth.
    async fn send_watermark(&self, publisher: &Publisher) -> Result<(), PublishError> {
        let as_of = analytics_events::timestamp::truncate(Utc::now());
        match backlog(&self.pool).await {
            Ok((outbox_pending, oldest_pending_at)) => {
                publisher.publish_watermark(Watermark { as_of, outbox_pending, oldest_pending_at }).await
            }
            Err(error) => {
                tracing::debug!(%error, "no watermark: cannot read the outbox backlog");
                Ok(())
            }
        }
    }

    /// Leases the oldest unpublished rows that no other relay holds.
    pub async fn claim(&self) -> sqlx::Result<Vec<OutboxEvent>> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "update outbox set claimed_until = now() + $2 * interval '1 millisecond'
              where id in (
                    select id from outbox
                     where published_at is null and (claimed_until is null or claimed_until < now())
                     order by id
                     limit $1
                       for update skip locked)
          returning id, event_id, event_type, body::text as body, occurred_at",
        )
        .bind(self.batch_size)
        .bind(i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut batch: Vec<OutboxEvent> = rows
            .into_iter()
            .map(|row| {
                let event_type = EventType::parse(&row.event_type).ok_or_else(|| {
                    sqlx::Error::Decode(
                        format!("unknown event type {:?} in outbox row {}", row.event_type, row.id).into(),
                    )
                })?;
                Ok(OutboxEvent {
                    id: row.id,
                    event_id: row.event_id,
                    event_type,
                    body: row.body.into_bytes(),
                    occurred_at: row.occurred_at,
                })
            })
            .collect::<sqlx::Result<_>>()?;
        batch.sort_by_key(|event| event.id);
        Ok(batch)
    }

    pub async fn mark_published(&self, batch: &[OutboxEvent]) -> sqlx::Result<()> {
        let ids: Vec<i64> = batch.iter().map(|event| event.id).collect();
        sqlx::query("update outbox set published_at = now(), claimed_until = null where id = any($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Gives a batch that failed to publish back at once, instead of waiting for its lease to end.
    async fn release(&self, batch: &[OutboxEvent]) {
        let ids: Vec<i64> = batch.iter().map(|event| event.id).collect();
        let released =
            sqlx::query("update outbox set claimed_until = null where id = any($1) and published_at is null")
                .bind(&ids)
                .execute(&self.pool)
                .await;
        if let Err(error) = released {
            tracing::warn!(%error, "relay cannot release its claim; the rows return when the lease ends");
        }
    }
}

/// Unpublished outbox rows, and the occurredAt of the oldest.
async fn backlog(pool: &PgPool) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
    sqlx::query_as("select count(*), min(occurred_at) from outbox where published_at is null").fetch_one(pool).await
}

/// Every second, the backlog gauges; at start and then every minute, pruning of rows published longer ago
/// than `retention`.
async fn housekeeping(pool: PgPool, metrics: RelayMetrics, retention: Duration, shutdown: CancellationToken) {
    const PRUNE_EVERY: u32 = 60;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0_u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match backlog(&pool).await {
            Ok((pending, oldest)) => {
                metrics.pending.set(pending);
                let age = oldest.map_or(0.0, |at| (Utc::now() - at).as_seconds_f64().max(0.0));
                metrics.oldest_pending_seconds.set(age);
            }
            Err(error) => tracing::debug!(%error, "cannot read the outbox backlog"),
        }
        ticks = ticks.wrapping_add(1);
        if ticks % PRUNE_EVERY == 1 {
            let pruned = sqlx::query(
                "delete from outbox where id in (
                     select id from outbox where published_at < now() - $1 * interval '1 second' limit 10000)",
            )
            .bind(retention.as_secs_f64())
            .execute(&pool)
            .await;
            match pruned {
                Ok(done) if done.rows_affected() > 0 => {
                    tracing::info!(rows = done.rows_affected(), "pruned published outbox rows")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot prune the outbox"),
            }
        }
    }
}
