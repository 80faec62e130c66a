//! Publishing a batch to RabbitMQ: persistent, mandatory messages, and nothing counts until confirmed.

use std::time::Duration;

use analytics_events::{Envelope, EventType, Stream, Topology, Watermark};
use lapin::{
    BasicProperties, Channel, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use secrecy::SecretString;

use super::OutboxEvent;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not confirm the batch within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the broker refused (nacked) a message")]
    Nacked,
    #[error("unroutable: {0}")]
    Unroutable(String),
    #[error("the broker did not complete the set-up (connection, topology, confirm mode) within {0:?}")]
    SetUpTimedOut(Duration),
}

/// A confirm-mode channel on its own connection, with the topology declared.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    topology: Topology,
    confirm_timeout: Duration,
}

impl Publisher {
    pub async fn connect(
        url: &SecretString,
        topology: Topology,
        confirm_timeout: Duration,
    ) -> Result<Self, PublishError> {
        let set_up = async {
            let connection = analytics_kit::amqp::connect(url, "command-service outbox relay").await?;
            let channel = connection.create_channel().await?;
            analytics_kit::amqp::declare_topology(&channel, &topology).await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok(Self { connection, channel, topology, confirm_timeout })
        };
        tokio::time::timeout(analytics_kit::amqp::SET_UP_TIMEOUT, set_up)
            .await
            .unwrap_or(Err(PublishError::SetUpTimedOut(analytics_kit::amqp::SET_UP_TIMEOUT)))
    }

    /// Publishes every event of the batch and waits until the broker has confirmed all of them; only
    /// then may the rows leave the outbox. Any failure fails the whole batch, to be retried.
    pub async fn publish(&self, batch: &[OutboxEvent]) -> Result<(), PublishError> {
        // Every key first, so that a batch is refused whole rather than half sent.
        let routing_keys = batch
            .iter()
            .map(|event| {
                event.event_type.routing_key().ok_or_else(|| {
                    PublishError::Unroutable(format!("{} is not a domain event", event.event_type.as_str()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.bounded(async {
            let mut confirms = Vec::with_capacity(batch.len());
            for (event, routing_key) in batch.iter().zip(routing_keys) {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(event.event_id.to_string().into())
                    .with_type(event.event_type.as_str().into())
                    .with_timestamp(u64::try_from(event.occurred_at.timestamp()).unwrap_or_default())
                    .with_app_id("command-service".into());
                // Mandatory: a message no queue takes comes back instead of being confirmed and lost.
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                let confirm = self
                    .channel
                    .basic_publish(
                        self.topology.exchange.as_str().into(),
                        routing_key.into(),
                        options,
                        &event.body,
                        properties,
                    )
                    .await?;
                confirms.push(confirm);
            }
            Ok(confirms)
        })
        .await
    }

    /// Sends the backlog report down both queues, behind everything published so far, and waits for
    /// the confirms. Watermarks are transient: a lost one is superseded by the next.
    pub async fn publish_watermark(&self, watermark: Watermark) -> Result<(), PublishError> {
        let body = Envelope::new(EventType::Watermark, watermark.as_of, 0, watermark).to_body();
        self.bounded(async {
            let mut confirms = Vec::with_capacity(2);
            for stream in Stream::ALL {
                let properties = BasicProperties::default()
                    .with_delivery_mode(1)
                    .with_content_type("application/json".into())
                    .with_type(EventType::Watermark.as_str().into())
                    .with_app_id("command-service".into());
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                confirms.push(
                    self.channel
                        .basic_publish(
                            self.topology.exchange.as_str().into(),
                            stream.watermark_routing_key().into(),
                            options,
                            &body,
                            properties,
                        )
                        .await?,
                );
            }
            Ok(confirms)
        })
        .await
    }

    /// Runs `sends` and waits for every confirm they return, within the confirm timeout as a whole:
    /// a broker that stops reading blocks the sends themselves, and the relay holds its claim on the
    /// rows meanwhile, so the bound covers both.
    async fn bounded(
        &self,
        sends: impl Future<Output = Result<Vec<PublisherConfirm>, PublishError>>,
    ) -> Result<(), PublishError> {
        let confirmed = async {
            let confirmations = futures::future::try_join_all(sends.await?).await?;
            for confirmation in confirmations {
                if confirmation.is_nack() {
                    return Err(PublishError::Nacked);
                }
                if let Some(returned) = confirmation.take_message() {
                    return Err(PublishError::Unroutable(format!(
                        "no queue is bound for routing key {}",
                        returned.delivery.routing_key
                    )));
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.confirm_timeout, confirmed)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.confirm_timeout))?
    }

    pub async fn close(self) {
        analytics_kit::amqp::close(&self.connection, &[&self.channel], "relay stopping").await;
    }
}
