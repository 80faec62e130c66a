//! Broker names. Declaration itself lives with the AMQP client code in the kit crate.

use crate::Stream;

/// The exchanges and queues of one pipeline. `prefix` lets several pipelines (or parallel tests) share a
/// broker; production uses none, which gives the documented names `order-events` and `product-events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange the relay publishes to, with the event's routing key.
    pub exchange: String,
    /// Durable quorum queue bound to `order.*`.
    pub order_queue: String,
    /// Durable quorum queue bound to `product.*`.
    pub product_queue: String,
    /// Fanout exchange that receives rejected and over-delivered messages.
    pub dead_letter_exchange: String,
    /// Where poison messages wait, with their reason, for a human.
    pub dead_letter_queue: String,
}

impl Topology {
    /// How often a quorum queue redelivers a message before dead-lettering it.
    pub const DELIVERY_LIMIT: i64 = 5;

    /// The queue that carries `stream`.
    pub fn queue(&self, stream: Stream) -> &str {
        match stream {
            Stream::Orders => &self.order_queue,
            Stream::Products => &self.product_queue,
        }
    }

    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            exchange: format!("{prefix}analytics-events"),
            order_queue: format!("{prefix}order-events"),
            product_queue: format!("{prefix}product-events"),
            dead_letter_exchange: format!("{prefix}analytics-dead-letter"),
            dead_letter_queue: format!("{prefix}analytics-dead-letter"),
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::with_prefix("")
    }
}
