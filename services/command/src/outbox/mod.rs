//! The transactional outbox: events are written with the change that caused them ([`enqueue`]), and
//! the [`Relay`] publishes them to the broker later.

mod publisher;
mod relay;
mod schedule;
mod store;

pub use publisher::{PublishError, Publisher};
pub use relay::{Relay, RelayWaker};
pub use store::{BACKLOG_COUNTED, Backlog, Claim, Outbox, OutboxEvent, enqueue};
