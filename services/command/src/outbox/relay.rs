//! The relay moves outbox rows to RabbitMQ.
//!
//! It claims a batch from the [`Outbox`] by deleting it in an open transaction (`SKIP LOCKED`, so
//! concurrent relays take disjoint batches), publishes it with publisher confirms, and commits only
//! once every message is confirmed; a failed publish rolls back, and the rows are there for the next
//! try. The transaction lasts one bounded publish: the sends and confirms together have the confirm
//! timeout, and PostgreSQL ends a claim left idle longer than [`CLAIM_HOLD_MARGIN`] beyond it. A relay
//! that dies or stalls before its commit gives the rows back, and they are published again (at least
//! once; the consumer's idempotency absorbs the repeat). Handlers wake it right after their commit,
//! and it polls as a fallback for rows written by other processes and for claims given back
//! ([`IdlePoll`]).
//!
//! After its batches, and while idle, it sends a [`Watermark`] with the outbox backlog down each queue
//! when the [`WatermarkSchedule`] says so; that is how the read side knows its lag.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use analytics_events::{Topology, Watermark};
use analytics_kit::backoff::Backoff;
use anyhow::Context as _;
use chrono::Utc;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    Claim, Outbox, PublishError, Publisher,
    schedule::{IdlePoll, WATERMARK_IDLE_INTERVAL, WatermarkSchedule},
};
use crate::{config::RelayConfig, store};

/// How much longer than the confirm timeout PostgreSQL lets a claim sit idle before it ends it: room for
/// the commit to arrive after the slowest publish that still succeeds.
pub const CLAIM_HOLD_MARGIN: Duration = Duration::from_secs(2);

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
    outbox: Outbox,
    amqp_url: SecretString,
    topology: Topology,
    batch_size: i64,
    confirm_timeout: Duration,
    poll_interval: Duration,
    waker: RelayWaker,
    metrics: RelayMetrics,
}

impl Relay {
    /// A relay over the write database behind `pool`. Fails without a broker URL.
    pub fn new(pool: PgPool, config: &RelayConfig, registry: &Registry) -> anyhow::Result<Self> {
        let amqp_url =
            config.amqp_url.clone().context("the relay needs the broker's URL: set AMQP_URL (--amqp-url)")?;
        Ok(Self {
            outbox: Outbox::new(pool),
            amqp_url,
            topology: Topology::with_prefix(&config.topology_prefix),
            batch_size: config.batch_size.max(1),
            confirm_timeout: config.confirm_timeout,
            poll_interval: config.poll_interval,
            waker: RelayWaker::default(),
            metrics: RelayMetrics::register(registry)?,
        })
    }

    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Claims the next batch, as this relay's loop does.
    pub async fn claim(&self) -> sqlx::Result<Claim> {
        self.outbox.claim(self.batch_size, self.confirm_timeout + CLAIM_HOLD_MARGIN).await
    }

    /// Publishes until `shutdown`, reconnecting to the broker with backoff whenever it is lost. On
    /// shutdown the batch in flight is published and committed before it returns.
    #[tracing::instrument(name = "relay", skip_all, fields(exchange = %self.topology.exchange))]
    pub async fn run(self, shutdown: CancellationToken) {
        let housekeeping = tokio::spawn(housekeeping(self.outbox.clone(), self.metrics.clone(), shutdown.clone()));
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let connecting = Publisher::connect(&self.amqp_url, self.topology.clone(), self.confirm_timeout);
            // A stop does not wait for a connection: nothing is in flight yet.
            let connected = tokio::select! {
                connected = connecting => connected,
                () = shutdown.cancelled() => break,
            };
            match connected {
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

    /// Claims, publishes and commits batches until shutdown (`Ok`) or a broker failure (`Err`).
    async fn pump(&self, publisher: &Publisher, shutdown: &CancellationToken) -> Result<(), PublishError> {
        let mut database_backoff = Backoff::default();
        let mut watermarks = WatermarkSchedule::default();
        let mut idle = IdlePoll::new(self.poll_interval.min(WATERMARK_IDLE_INTERVAL));
        while !shutdown.is_cancelled() {
            let claim = match self.claim().await {
                Ok(claim) => {
                    database_backoff.reset();
                    claim
                }
                Err(error) => {
                    tracing::warn!(%error, "relay cannot claim outbox rows");
                    if !database_backoff.wait(shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if claim.events.is_empty() {
                drop(claim.commit().await);
                if watermarks.due_when_idle(Instant::now()) {
                    self.send_watermark(publisher).await?;
                    watermarks.sent(Instant::now());
                }
                tokio::select! {
                    () = self.waker.notify.notified() => idle.reset(),
                    () = tokio::time::sleep(idle.wait()) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            idle.reset();
            if self.relay_batch(publisher, claim).await? && watermarks.due_after_batch(Instant::now()) {
                self.send_watermark(publisher).await?;
                watermarks.sent(Instant::now());
            }
        }
        Ok(())
    }

    /// Publishes one claimed batch and commits the claim. `Ok(false)` if the commit fails: the rows are
    /// back in the outbox and go out again, a duplicate and never a loss.
    #[tracing::instrument(name = "relay_batch", skip_all, fields(
        events = claim.events.len(),
        first_id = claim.events.first().map(|event| event.id),
        last_id = claim.events.last().map(|event| event.id),
    ))]
    async fn relay_batch(&self, publisher: &Publisher, claim: Claim) -> Result<bool, PublishError> {
        let started = Instant::now();
        if let Err(error) = publisher.publish(&claim.events).await {
            self.metrics.failures.inc();
            if let Err(error) = claim.roll_back().await {
                tracing::warn!(%error, "relay cannot give back its claim; PostgreSQL ends it when the connection goes");
            }
            return Err(error);
        }
        self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        let now = Utc::now();
        for event in &claim.events {
            self.metrics.published.with_label_values(&[event.event_type.as_str()]).inc();
            let lag = (now - event.occurred_at).to_std().unwrap_or_default();
            self.metrics.publish_lag_seconds.observe(lag.as_secs_f64());
        }
        match claim.commit().await {
            Ok(()) => Ok(true),
            Err(error) => {
                tracing::warn!(%error, "relay cannot commit a published batch; its rows will be published again");
                Ok(false)
            }
        }
    }

    /// Reads the backlog and publishes it as a watermark. If the database cannot say, none is sent:
    /// the read side then sees its watermark age and reports itself stale, which is the truth.
    async fn send_watermark(&self, publisher: &Publisher) -> Result<(), PublishError> {
        let as_of = analytics_events::timestamp::truncate(Utc::now());
        match self.outbox.backlog().await {
            Ok(backlog) => {
                publisher
                    .publish_watermark(Watermark {
                        as_of,
                        outbox_pending: backlog.pending,
                        oldest_pending_at: backlog.oldest_pending_at,
                    })
                    .await
            }
            Err(error) => {
                tracing::debug!(%error, "no watermark: cannot read the outbox backlog");
                Ok(())
            }
        }
    }
}

/// Every second, the backlog gauges; every five, a vacuum of the outbox; at start and then every minute,
/// pruning of expired idempotency keys.
async fn housekeeping(outbox: Outbox, metrics: RelayMetrics, shutdown: CancellationToken) {
    const VACUUM_EVERY: u32 = 5;
    const PRUNE_EVERY: u32 = 60;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0_u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match outbox.backlog().await {
            Ok(backlog) => {
                metrics.pending.set(backlog.pending);
                let age = backlog.oldest_pending_at.map_or(0.0, |at| (Utc::now() - at).as_seconds_f64().max(0.0));
                metrics.oldest_pending_seconds.set(age);
            }
            Err(error) => tracing::debug!(%error, "cannot read the outbox backlog"),
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(VACUUM_EVERY) {
            outbox.vacuum().await;
        }
        if ticks % PRUNE_EVERY == 1 {
            store::idempotency::prune(outbox.pool(), store::idempotency::RETENTION).await;
        }
    }
}
