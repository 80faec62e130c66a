//! Payloads carry everything the read side needs, so it never has to join across queues.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Money, timestamp};

/// The payload of ProductCreated and ProductUpdated: the product's full state at `version`. Version 1
/// is the creation, and it grows by one with every change, so a replica can ignore an update that
/// arrives after a newer one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductState {
    pub product_id: i64,
    pub name: String,
    pub category: String,
    pub price: Money,
    pub stock: i64,
    pub version: i64,
}

/// An accepted order, with each line's product name, category and catalog unit price at order time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderCreated {
    pub order_id: i64,
    pub customer_id: i64,
    /// When the order was accepted: UTC, millisecond precision. The read side buckets hours by this.
    #[serde(with = "timestamp")]
    pub ordered_at: DateTime<Utc>,
    /// Σ quantity × unit price over the lines.
    pub total: Money,
    pub items: Vec<OrderLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderLine {
    pub product_id: i64,
    pub product_name: String,
    pub category: String,
    pub unit_price: Money,
    pub quantity: i64,
}

/// The relay's backlog report, published on each queue after the events it has published so far.
///
/// Because publishing is confirmed and each queue is FIFO, once a consumer has applied a watermark,
/// every event that occurred before `asOf` is either applied already or still in the outbox, where
/// `outboxPending` counts it and `oldestPendingAt` bounds its age. The aggregate id is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Watermark {
    #[serde(with = "timestamp")]
    pub as_of: DateTime<Utc>,
    /// Outbox rows not yet published at `asOf`.
    pub outbox_pending: i64,
    /// occurredAt of the oldest of them, if any.
    #[serde(with = "timestamp::option")]
    pub oldest_pending_at: Option<DateTime<Utc>>,
}
