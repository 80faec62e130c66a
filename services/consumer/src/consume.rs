//! Reads both queues and applies their messages in batches, acking only after the commit.
//!
//! Each queue gets its own channel with a prefetch (`basic_qos`) set before consuming. A batch is the
//! first delivery plus whatever else is already buffered, up to the batch size, so batching adds no
//! waiting at low load and grows by itself under load. A batch is applied in one transaction and then
//! acked with a single multiple-ack. Transient database errors retry the same batch with backoff; a
//! message the database refuses outright is retried alone a few times, then dead-lettered. A message
//! that cannot be parsed is dead-lettered at once with its reason. Losing the broker drops everything
//! unacked (the broker redelivers it) and reconnects with backoff, declaring the topology again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use analytics_events::Topology;
use analytics_kit::backoff::Backoff;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::projection::{self, Incoming, Outcome, Poison, Stream};

/// How often the dead-letter queue's depth is read.
const DEAD_LETTER_READ_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// How often a message the database refuses is tried alone before it is dead-lettered.
const ATTEMPTS_BEFORE_DEAD_LETTER: u32 = 3;

/// How long a stopping consumer waits for the broker: to confirm the cancel of its deliveries, and for
/// the next of the deliveries sent before it (or their end). A broker that takes longer gets the rest
/// back when the connection closes.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a broker session ended; every case reconnects.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker cancelled the consumer")]
    Cancelled,
    #[error("the broker refused (nacked) a dead-lettered message")]
    DeadLetterNacked,
    #[error("the broker did not complete the session's set-up within {0:?}")]
    SetUpTimedOut(std::time::Duration),
}

type Result<T, E = SessionError> = std::result::Result<T, E>;

/// How an attempt to apply a batch ended.
enum Attempt {
    Applied,
    /// The database refused it: not a transient error, so the same batch would fail again.
    Refused(sqlx::Error),
    /// Shutdown came while the database was unreachable.
    Stopped,
}

#[derive(Clone)]
pub struct ConsumerMetrics {
    applied: IntCounterVec,
    duplicates: IntCounterVec,
    dead_lettered: IntCounterVec,
    dead_letter_queue: IntGauge,
    batch_size: Histogram,
    apply_seconds: Histogram,
    end_to_end_seconds: Histogram,
}

impl ConsumerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let applied = IntCounterVec::new(
            Opts::new("consumer_events_applied_total", "Events applied to the read model, by event type."),
            &["event_type"],
        )?;
        let duplicates = IntCounterVec::new(
            Opts::new(
                "consumer_events_duplicate_total",
                "Redelivered events skipped because their hash was already processed.",
            ),
            &["event_type"],
        )?;
        let dead_lettered = IntCounterVec::new(
            Opts::new("consumer_events_dead_lettered_total", "Messages sent to the dead-letter queue, by reason."),
            &["reason"],
        )?;
        let dead_letter_queue = IntGauge::new(
            "consumer_dead_letter_queue_messages",
            "Messages waiting in the dead-letter queue, whoever put them there: a consumer, or the broker at \
             the delivery limit. Read every 15 s.",
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("consumer_batch_size", "Messages per applied batch.")
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]),
        )?;
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new("consumer_apply_duration_seconds", "Time to apply one batch, commit included.")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        let end_to_end_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "consumer_end_to_end_latency_seconds",
                "Time from an event's occurredAt on the write side to its commit in the read model.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )?;
        registry.register(Box::new(applied.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(dead_lettered.clone()))?;
        registry.register(Box::new(dead_letter_queue.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(apply_seconds.clone()))?;
        registry.register(Box::new(end_to_end_seconds.clone()))?;
        Ok(Self {
            applied,
            duplicates,
            dead_lettered,
            dead_letter_queue,
            batch_size,
            apply_seconds,
            end_to_end_seconds,
        })
    }
}

pub struct Consumer {
    pub(crate) pool: PgPool,
    amqp_url: SecretString,
    topology: Topology,
    prefetch: u16,
    batch_size: usize,
    metrics: ConsumerMetrics,
    connected: Arc<AtomicBool>,
}

impl Consumer {
    pub fn new(
        pool: PgPool,
        amqp_url: SecretString,
        topology: Topology,
        prefetch: u16,
        batch_size: usize,
        metrics: ConsumerMetrics,
    ) -> Self {
        Self { pool, amqp_url, topology, prefetch, batch_size: batch_size.max(1), metrics, connected: Arc::default() }
    }

    /// Whether it is connected to the broker and consuming, for `/readyz`.
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// Consumes until `shutdown`, reconnecting with backoff. On shutdown the batches in hand finish.
    #[tracing::instrument(name = "consumer", skip_all, fields(
        orders = self.topology.queue(Stream::Orders),
        products = self.topology.queue(Stream::Products),
    ))]
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) => tracing::warn!(%error, "consumer lost the broker; reconnecting"),
            }
            self.connected.store(false, Ordering::Relaxed);
            if !backoff.wait(&shutdown).await {
                break;
            }
        }
        self.connected.store(false, Ordering::Relaxed);
        tracing::info!("consumer stopped");
    }

    /// One connection's life: declare, consume both queues, and return when either fails or on shutdown.
    async fn session(&self, shutdown: &CancellationToken, backoff: &mut Backoff) -> Result<()> {
        let set_up = async {
            let connection = analytics_kit::amqp::connect(&self.amqp_url, "consumer-service").await?;
            let setup = connection.create_channel().await?;
            analytics_kit::amqp::declare_topology(&setup, &self.topology).await?;
            let dead_letters = connection.create_channel().await?;
            dead_letters.confirm_select(ConfirmSelectOptions::default()).await?;
            let orders = self.open(&connection, self.topology.queue(Stream::Orders)).await?;
            let products = self.open(&connection, self.topology.queue(Stream::Products)).await?;
            lapin::Result::Ok((connection, setup, dead_letters, orders, products))
        };
        // A stop does not wait for a set-up: nothing is consumed yet, so there is nothing to finish.
        let (connection, setup, dead_letters, orders, products) = tokio::select! {
            set_up = tokio::time::timeout(analytics_kit::amqp::SET_UP_TIMEOUT, set_up) => {
                set_up.map_err(|_| SessionError::SetUpTimedOut(analytics_kit::amqp::SET_UP_TIMEOUT))??
            }
            () = shutdown.cancelled() => return Ok(()),
        };
        self.connected.store(true, Ordering::Relaxed);
        backoff.reset();
        tracing::info!("consumer connected to the broker");

        // Kept to be closed, in order, when the session ends.
        let channels = [setup.clone(), dead_letters.clone(), orders.0.clone(), products.0.clone()];
        // If one stream fails, the other finishes its batch and stops too, and the session reconnects.
        let stop = shutdown.child_token();
        let (orders, products, watched) = tokio::join!(
            self.consume(Stream::Orders, orders, &dead_letters, &stop),
            self.consume(Stream::Products, products, &dead_letters, &stop),
            self.watch_dead_letters(&setup, &stop),
        );
        analytics_kit::amqp::close(&connection, &channels.each_ref(), "consumer stopping").await;
        orders.and(products).and(watched)
    }

    /// Reads the dead-letter queue's depth into [`ConsumerMetrics`] every [`DEAD_LETTER_READ_INTERVAL`]
    /// until `stop`. The depth counts every message there, including the broker's own dead letters
    /// (redelivered past the delivery limit), which no consumer sees go.
    async fn watch_dead_letters(&self, channel: &Channel, stop: &CancellationToken) -> Result<()> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let result = async {
            loop {
                let declare = channel.queue_declare(
                    self.topology.dead_letter_queue.as_str().into(),
                    passive,
                    FieldTable::default(),
                );
                // A broker that does not answer must not hold the session's stop.
                let queue = tokio::select! {
                    queue = declare => queue?,
                    () = stop.cancelled() => return Ok(()),
                };
                self.metrics.dead_letter_queue.set(i64::from(queue.message_count()));
                tokio::select! {
                    () = tokio::time::sleep(DEAD_LETTER_READ_INTERVAL) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
        .await;
        stop.cancel();
        result
    }

    async fn open(&self, connection: &Connection, queue: &str) -> lapin::Result<(Channel, lapin::Consumer)> {
        let channel = connection.create_channel().await?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok((channel, consumer))
    }

    async fn consume(
        &self,
        stream: Stream,
        (channel, mut consumer): (Channel, lapin::Consumer),
        dead_letters: &Channel,
        stop: &CancellationToken,
    ) -> Result<()> {
        let result = async {
            let unacked = loop {
                let first = tokio::select! {
                    next = consumer.next() => next,
                    () = stop.cancelled() => break false,
                };
                let (deliveries, _) = self.batch(Some(next_delivery(first)?), &mut consumer)?;
                if !self.process(stream, &channel, dead_letters, deliveries, stop).await? {
                    break true;
                }
            };
            self.drain(stream, &channel, consumer, dead_letters, stop, unacked).await
        }
        .await;
        stop.cancel();
        result
    }

    /// `first` and whatever else is already buffered, up to the batch size; and whether the consumer's
    /// deliveries ended (after a cancel).
    fn batch(&self, first: Option<Delivery>, consumer: &mut lapin::Consumer) -> Result<(Vec<Delivery>, bool)> {
        let mut deliveries = Vec::from_iter(first);
        while deliveries.len() < self.batch_size {
            match consumer.next().now_or_never() {
                Some(Some(next)) => deliveries.push(next?),
                Some(None) => return Ok((deliveries, true)),
                None => break,
            }
        }
        Ok((deliveries, false))
    }

    /// On shutdown: stops the broker's deliveries, then applies and acks the ones it sent already, so
    /// that a restart or a scale-down returns nothing to the queue (every return counts toward the
    /// queue's delivery limit, and enough of them would dead-letter a valid event). What cannot be
    /// applied now (the database is unreachable) is handed back with a nack, which RabbitMQ 4.3 and
    /// later do not count; older brokers count it as they count a closed channel.
    async fn drain(
        &self,
        stream: Stream,
        channel: &Channel,
        mut consumer: lapin::Consumer,
        dead_letters: &Channel,
        stop: &CancellationToken,
        mut unacked: bool,
    ) -> Result<()> {
        tracing::info!(stream = stream.as_str(), "stopping: cancelling the broker's deliveries");
        let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(DRAIN_WAIT, cancel).await {
            Ok(cancelled) => cancelled?,
            Err(_) => {
                tracing::warn!(
                    stream = stream.as_str(),
                    "the broker did not confirm the cancel; it gets the rest back"
                );
                return Ok(());
            }
        }
        let mut applied = 0;
        // After the cancel, the deliveries sent before it come out, and then the end.
        let mut ended = false;
        while !ended && !unacked {
            let Ok(next) = tokio::time::timeout(DRAIN_WAIT, consumer.next()).await else {
                tracing::warn!(
                    stream = stream.as_str(),
                    applied,
                    "the deliveries did not end after the cancel; the broker gets the rest back"
                );
                break;
            };
            let Some(first) = next else { break };
            let (deliveries, end) = self.batch(Some(first?), &mut consumer)?;
            ended = end;
            let count = deliveries.len();
            if self.process(stream, channel, dead_letters, deliveries, stop).await? {
                applied += count;
            } else {
                unacked = true;
            }
        }
        if unacked {
            tracing::warn!(
                stream = stream.as_str(),
                "the read database is unreachable; handing back what is not applied"
            );
            // Delivery tag 0 with `multiple`: every message of the channel not acked yet.
            channel.basic_nack(0, BasicNackOptions { multiple: true, requeue: true }).await?;
        }
        tracing::info!(stream = stream.as_str(), applied, "consumer drained");
        Ok(())
    }

    /// Applies and acks one batch. Returns `false` if shutdown came while the database was unreachable
    /// (the batch stays unacked, and the broker will deliver it again).
    async fn process(
        &self,
        stream: Stream,
        channel: &Channel,
        dead_letters: &Channel,
        deliveries: Vec<Delivery>,
        stop: &CancellationToken,
    ) -> Result<bool> {
        let last_tag = deliveries.last().map(|d| d.delivery_tag).unwrap_or_default();
        let mut batch: Vec<(&Delivery, Incoming)> = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            match projection::parse(&delivery.data, stream) {
                Ok(incoming) => batch.push((delivery, incoming)),
                Err(poison) => self.dead_letter(dead_letters, delivery, &poison).await?,
            }
        }
        match self.apply_retrying(stream, &batch, &mut Backoff::default(), stop).await {
            Attempt::Applied => {}
            Attempt::Stopped => return Ok(false),
            Attempt::Refused(error) => {
                tracing::warn!(%error, stream = stream.as_str(), "the read database refused a batch; applying one by one");
                for message in &batch {
                    if !self.apply_alone(stream, dead_letters, message, stop).await? {
                        return Ok(false);
                    }
                }
            }
        }
        channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await?;
        Ok(true)
    }

    /// Applies one message that was in a refused batch: it is tried a few times, then dead-lettered with
    /// the database's reason. `false` on shutdown.
    async fn apply_alone(
        &self,
        stream: Stream,
        dead_letters: &Channel,
        message: &(&Delivery, Incoming),
        stop: &CancellationToken,
    ) -> Result<bool> {
        let mut refusals = 0;
        let mut backoff = Backoff::default();
        loop {
            match self.apply_retrying(stream, std::slice::from_ref(message), &mut backoff, stop).await {
                Attempt::Applied => return Ok(true),
                Attempt::Stopped => return Ok(false),
                Attempt::Refused(error) => {
                    refusals += 1;
                    if refusals >= ATTEMPTS_BEFORE_DEAD_LETTER {
                        let poison = Poison {
                            kind: "rejected_by_database",
                            detail: format!("the read database refused it: {error}"),
                        };
                        self.dead_letter(dead_letters, message.0, &poison).await?;
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Applies `batch` in one transaction, retrying every failure that is not a refusal of the data with
    /// `backoff` until it is applied, refused, or shutdown comes.
    #[tracing::instrument(name = "consumer_batch", skip_all, fields(stream = stream.as_str(), messages = batch.len()))]
    async fn apply_retrying(
        &self,
        stream: Stream,
        batch: &[(&Delivery, Incoming)],
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Attempt {
        loop {
            let started = Instant::now();
            match projection::apply(&self.pool, stream, batch.iter().map(|(_, incoming)| incoming)).await {
                Ok(outcomes) => {
                    self.record(batch, &outcomes, started);
                    return Attempt::Applied;
                }
                Err(error) if !projection::is_refusal(&error) => {
                    tracing::warn!(%error, "cannot apply a batch yet; retrying");
                    if !backoff.wait(stop).await {
                        return Attempt::Stopped;
                    }
                }
                Err(error) => return Attempt::Refused(error),
            }
        }
    }

    fn record(&self, batch: &[(&Delivery, Incoming)], outcomes: &[Outcome], started: Instant) {
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(batch.len() as f64);
        let now = Utc::now();
        for ((_, incoming), outcome) in batch.iter().zip(outcomes) {
            let event_type = incoming.message.event_type().as_str();
            match outcome {
                Outcome::Applied => {
                    self.metrics.applied.with_label_values(&[event_type]).inc();
                    let latency = (now - incoming.message.occurred_at()).as_seconds_f64().max(0.0);
                    self.metrics.end_to_end_seconds.observe(latency);
                }
                Outcome::Duplicate => self.metrics.duplicates.with_label_values(&[event_type]).inc(),
                Outcome::Watermark => {}
            }
        }
    }

    /// Publishes a copy with its reason to the dead-letter exchange and waits for the broker's confirm.
    /// The caller's ack then removes the original: the message is moved, never dropped.
    async fn dead_letter(&self, channel: &Channel, delivery: &Delivery, poison: &Poison) -> Result<()> {
        tracing::warn!(reason = %poison, queue = %delivery.routing_key, "dead-lettering a message");
        let mut headers = FieldTable::default();
        headers.insert("x-dead-letter-reason".into(), AMQPValue::LongString(LongString::from(poison.detail.as_str())));
        headers.insert("x-poison-kind".into(), AMQPValue::LongString(LongString::from(poison.kind)));
        headers
            .insert("x-original-exchange".into(), AMQPValue::LongString(LongString::from(delivery.exchange.as_str())));
        headers.insert(
            "x-original-routing-key".into(),
            AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
        );
        let properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        let confirm = channel
            .basic_publish(
                self.topology.dead_letter_exchange.as_str().into(),
                delivery.routing_key.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(SessionError::DeadLetterNacked);
        }
        self.metrics.dead_lettered.with_label_values(&[poison.kind]).inc();
        Ok(())
    }
}

/// A delivery of a consumer that is not being drained: its end means the broker cancelled it.
fn next_delivery(next: Option<lapin::Result<Delivery>>) -> Result<Delivery> {
    Ok(next.ok_or(SessionError::Cancelled)??)
}

/// Applied-message hashes are kept for `retention`, well beyond any redelivery, then pruned: every ten
/// minutes, every expired hash (see [`analytics_kit::db::prune`]).
pub async fn prune_processed_events(pool: PgPool, retention: std::time::Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        prune_expired_hashes(&pool, retention).await;
    }
}

/// Deletes every hash older than `retention`; returns how many.
pub async fn prune_expired_hashes(pool: &PgPool, retention: std::time::Duration) -> u64 {
    let delete = "delete from processed_events where hash in (
                      select hash from processed_events where processed_at < now() - $1 * interval '1 second' limit $2)";
    analytics_kit::db::prune(pool, "processed-event hashes", delete, retention).await
}
