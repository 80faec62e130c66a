//! The contracts between the components.
//!
//! Everything that crosses the broker is defined here: the versioned [`Envelope`], the payload of each
//! [`EventType`], the exact-decimal [`Money`] type they carry, the two [`Stream`]s with their routing
//! keys, the broker [`Topology`] names, and the idempotency key ([`body_hash`]) the consumer derives
//! from each message body. So is what the operator reads from the read side: [`SyncStatusResponse`].

mod envelope;
mod money;
mod payloads;
mod stream;
mod sync_status;
mod topology;

pub use envelope::{Envelope, EventType, SCHEMA_VERSION, body_hash, timestamp};
pub use money::{Money, MoneyError, money_schema};
pub use payloads::{OrderCreated, OrderLine, ProductState, Watermark};
pub use stream::Stream;
pub use sync_status::{SyncState, SyncStatusResponse};
pub use topology::Topology;
