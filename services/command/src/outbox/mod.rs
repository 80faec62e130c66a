//! The transactional outbox: events are written with the change that caused them, and relayed later.

mod publisher;
mod relay;

pub use publisher::{PublishError, Publisher};
pub use relay::{OutboxEvent, Relay, RelayWaker};

use analytics_events::Envelope;
use serde::{Serialize, de::DeserializeOwned};
use sqlx::PgConnection;

/// Writes `event` to the outbox. Call it inside the transaction that makes the change it describes.
pub async fn enqueue<P: Serialize + DeserializeOwned>(
    conn: &mut PgConnection,
    event: &Envelope<P>,
) -> sqlx::Result<()> {
    let body = String::from_utf8(event.to_body()).expect("JSON is UTF-8");
    sqlx::query(
        "insert into outbox (event_id, event_type, aggregate_id, body, occurred_at) values ($1, $2, $3, $4::json, $5)",
    )
    .bind(event.event_id)
    .bind(event.event_type.as_str())
    .bind(event.aggregate_id)
    .bind(body)
    .bind(event.occurred_at)
    .execute(conn)
    .await
    .map(drop)
}
