//! Turns message bodies into view changes.
//!
//! [`parse`] reads a body into a typed [`Message`] or says why it never can be (a poison message).
//! [`apply`] applies a batch in one transaction: it records each body's SHA-256 in `processed_events`
//! and applies only the messages whose hash was new, so a redelivered message changes nothing. All rows
//! are written in key order, so concurrent consumers never deadlock on each other (and if the database
//! reports one anyway, the caller retries: only a [`is_refusal`] is the message's fault).
//!
//! Every batch first takes [`APPLY_LOCK`] in shared mode, for the length of its transaction. A rebuild
//! takes it exclusively for the instant of its swap: no batch is then half-applied, and none starts
//! until the new views are in place (see [`crate::rebuild`]).

pub(crate) mod orders;
mod products;

use std::collections::HashSet;

pub use analytics_events::Stream;
use analytics_events::{Envelope, EventType, OrderCreated, ProductState, SCHEMA_VERSION, Watermark, body_hash};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};

/// Which tables a change goes to: the views that queries read, or a rebuild's shadows of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    Live,
    Shadow,
}

impl Tables {
    /// The name of `view`'s table of this set.
    pub fn of(self, view: &str) -> String {
        match self {
            Self::Live => view.to_owned(),
            Self::Shadow => format!("{view}{SHADOW_SUFFIX}"),
        }
    }
}

/// A shadow table is named after its view with this suffix.
pub const SHADOW_SUFFIX: &str = "__rebuild";

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    OrderCreated(Envelope<OrderCreated>),
    /// ProductCreated or ProductUpdated, as the envelope's eventType says.
    Product(Envelope<ProductState>),
    Watermark(Envelope<Watermark>),
}

impl Message {
    pub fn event_type(&self) -> EventType {
        match self {
            Self::OrderCreated(_) => EventType::OrderCreated,
            Self::Product(e) => e.event_type,
            Self::Watermark(_) => EventType::Watermark,
        }
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::OrderCreated(e) => e.occurred_at,
            Self::Product(e) => e.occurred_at,
            Self::Watermark(e) => e.occurred_at,
        }
    }
}

/// A parsed message and its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub hash: [u8; 32],
    pub message: Message,
}

/// Why a message can never be applied. `kind` is a metric label (bounded); the message explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Poison {
    pub kind: &'static str,
    pub detail: String,
}

impl Poison {
    fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    event_type: String,
    schema_version: u32,
}

/// Reads a message body from `stream`'s queue.
pub fn parse(body: &[u8], stream: Stream) -> Result<Incoming, Poison> {
    let header: Header =
        serde_json::from_slice(body).map_err(|e| Poison::new("invalid_json", format!("invalid JSON envelope: {e}")))?;
    let event_type = EventType::parse(&header.event_type)
        .ok_or_else(|| Poison::new("unknown_event_type", format!("unknown eventType {:?}", header.event_type)))?;
    if header.schema_version != SCHEMA_VERSION {
        return Err(Poison::new(
            "unsupported_schema_version",
            format!("unsupported schemaVersion {} (this consumer reads {SCHEMA_VERSION})", header.schema_version),
        ));
    }
    if event_type.stream().is_some_and(|own| own != stream) {
        return Err(Poison::new(
            "wrong_queue",
            format!("{} does not belong on the {} queue", event_type.as_str(), stream.as_str()),
        ));
    }
    let invalid =
        |e: serde_json::Error| Poison::new("invalid_payload", format!("invalid {} envelope: {e}", event_type.as_str()));
    let message = match event_type {
        EventType::OrderCreated => {
            let order: Envelope<OrderCreated> = serde_json::from_slice(body).map_err(invalid)?;
            check_amounts(&order.payload)?;
            Message::OrderCreated(order)
        }
        EventType::ProductCreated | EventType::ProductUpdated => {
            Message::Product(serde_json::from_slice(body).map_err(invalid)?)
        }
        EventType::Watermark => Message::Watermark(serde_json::from_slice(body).map_err(invalid)?),
    };
    Ok(Incoming { hash: body_hash(body), message })
}

/// The most units one order line may carry: far above what the command side accepts (10^6), and small
/// enough that no batch of orders can overflow a view's counters.
const MAX_QUANTITY: i64 = 1_000_000_000;

/// The read model stores money as `numeric(20, 2)`: below 10^18.
const MAX_AMOUNT: Decimal = Decimal::from_parts(2_808_348_672, 232_830_643, 0, false, 0);

/// An order whose line amounts or total cannot be stored is poison. Checked here, with checked
/// arithmetic, so that folding a batch of valid orders can never overflow.
fn check_amounts(order: &OrderCreated) -> Result<(), Poison> {
    let overflow = || {
        Poison::new(
            "amount_overflow",
            format!("order {}: an amount reaches {MAX_AMOUNT}, more than the read model stores", order.order_id),
        )
    };
    let mut sum = Decimal::ZERO;
    for line in &order.items {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(Poison::new(
                "amount_overflow",
                format!("order {}: a quantity of {} is outside 1 to {MAX_QUANTITY}", order.order_id, line.quantity),
            ));
        }
        let amount = line.unit_price.amount().checked_mul(Decimal::from(line.quantity)).ok_or_else(overflow)?;
        sum = sum.checked_add(amount).ok_or_else(overflow)?;
        if amount.abs() >= MAX_AMOUNT {
            return Err(overflow());
        }
    }
    if sum.abs() >= MAX_AMOUNT || order.total.amount().abs() >= MAX_AMOUNT {
        return Err(overflow());
    }
    Ok(())
}

/// What became of each message of a batch, in batch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    /// A watermark: recorded in sync_state, never hashed (a newer one simply supersedes it).
    Watermark,
}

/// The advisory lock key (of the read database) that batches share and a rebuild's swap takes alone.
pub const APPLY_LOCK: i64 = 0x616e_616c_7974_6963; // "analytic"

/// Applies a batch from one stream in one transaction, and says what became of each message.
pub async fn apply<'a>(
    pool: &PgPool,
    stream: Stream,
    batch: impl IntoIterator<Item = &'a Incoming>,
) -> sqlx::Result<Vec<Outcome>> {
    let batch: Vec<&Incoming> = batch.into_iter().collect();
    let mut tx = pool.begin().await?;
    let outcomes = apply_in(&mut tx, stream, &batch).await?;
    tx.commit().await?;
    Ok(outcomes)
}

async fn apply_in(conn: &mut PgConnection, stream: Stream, batch: &[&Incoming]) -> sqlx::Result<Vec<Outcome>> {
    sqlx::query("select pg_advisory_xact_lock_shared($1)").bind(APPLY_LOCK).execute(&mut *conn).await?;
    // Hashes in sorted order, so two consumers holding overlapping batches lock them in the same order.
    let mut hashes: Vec<&[u8]> = batch
        .iter()
        .filter(|incoming| !matches!(incoming.message, Message::Watermark(_)))
        .map(|incoming| incoming.hash.as_slice())
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let messages: Vec<&Message> = hashes
        .iter()
        .filter_map(|hash| batch.iter().find(|i| i.hash.as_slice() == *hash).map(|i| &i.message))
        .collect();
    let types: Vec<&str> = messages.iter().map(|m| m.event_type().as_str()).collect();
    let order_ids: Vec<Option<i64>> = messages
        .iter()
        .map(|m| if let Message::OrderCreated(e) = m { Some(e.payload.order_id) } else { None })
        .collect();
    let fresh: Vec<Vec<u8>> = sqlx::query_scalar(
        "insert into processed_events (hash, event_type, order_id)
         select * from unnest($1::bytea[], $2::text[], $3::bigint[]) order by 1
         on conflict (hash) do nothing
         returning hash",
    )
    .bind(&hashes)
    .bind(&types)
    .bind(&order_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut fresh: HashSet<Vec<u8>> = fresh.into_iter().collect();

    // A hash is applied once: its first occurrence in the batch, and only if it was new to the table.
    let outcomes: Vec<Outcome> = batch
        .iter()
        .map(|incoming| match incoming.message {
            Message::Watermark(_) => Outcome::Watermark,
            _ if fresh.remove(incoming.hash.as_slice()) => Outcome::Applied,
            _ => Outcome::Duplicate,
        })
        .collect();
    let applied = || batch.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Applied).map(|(i, _)| &i.message);

    match stream {
        Stream::Orders => {
            let orders: Vec<&OrderCreated> = applied()
                .filter_map(|m| if let Message::OrderCreated(e) = m { Some(&e.payload) } else { None })
                .collect();
            orders::apply(conn, &orders, Tables::Live).await?;
        }
        Stream::Products => products::apply(conn, applied()).await?,
    }
    record_progress(conn, stream, applied().map(Message::occurred_at).max(), newest_watermark(batch)).await?;
    Ok(outcomes)
}

fn newest_watermark<'a>(batch: &[&'a Incoming]) -> Option<&'a Watermark> {
    batch
        .iter()
        .filter_map(|incoming| if let Message::Watermark(e) = &incoming.message { Some(&e.payload) } else { None })
        .max_by_key(|watermark| watermark.as_of)
}

/// Moves the stream's progress forward, never back: the newest applied event, the newest watermark.
async fn record_progress(
    conn: &mut PgConnection,
    stream: Stream,
    last_event: Option<DateTime<Utc>>,
    watermark: Option<&Watermark>,
) -> sqlx::Result<()> {
    if last_event.is_none() && watermark.is_none() {
        return Ok(());
    }
    sqlx::query(
        "insert into sync_state as s (stream, last_event_occurred_at, last_event_applied_at,
                                      watermark_as_of, watermark_applied_at, outbox_pending, outbox_oldest_pending_at)
         values ($1, $2, case when $2::timestamptz is null then null else now() end,
                 $3, case when $3::timestamptz is null then null else now() end, coalesce($4, 0), $5)
         on conflict (stream) do update set
             last_event_occurred_at = greatest(s.last_event_occurred_at, excluded.last_event_occurred_at),
             last_event_applied_at = coalesce(excluded.last_event_applied_at, s.last_event_applied_at),
             watermark_as_of = greatest(s.watermark_as_of, excluded.watermark_as_of),
             watermark_applied_at = case when excluded.watermark_as_of >= coalesce(s.watermark_as_of, '-infinity')
                                         then excluded.watermark_applied_at else s.watermark_applied_at end,
             outbox_pending = case when excluded.watermark_as_of >= coalesce(s.watermark_as_of, '-infinity')
                                   then excluded.outbox_pending else s.outbox_pending end,
             outbox_oldest_pending_at = case when excluded.watermark_as_of >= coalesce(s.watermark_as_of, '-infinity')
                                             then excluded.outbox_oldest_pending_at else s.outbox_oldest_pending_at end",
    )
    .bind(stream.as_str())
    .bind(last_event)
    .bind(watermark.map(|w| w.as_of))
    .bind(watermark.map(|w| w.outbox_pending))
    .bind(watermark.and_then(|w| w.oldest_pending_at))
    .execute(conn)
    .await
    .map(drop)
}

/// Whether the database refused the data itself: a data exception (SQLSTATE class 22, such as a numeric
/// overflow or a NUL in text), a constraint violation (class 23), or a value beyond a program limit
/// (class 54, such as a text too long for an index). Only that makes a message poison.
/// Anything else is the infrastructure's failure, not the message's: a lost connection, a deadlock, a
/// full disk, a server gone read-only after a failover, a statement timeout, an I/O error. Those are
/// retried, with backoff, for as long as it takes.
pub fn is_refusal(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| ["22", "23", "54"].iter().any(|class| code.starts_with(class))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_messages_are_recognised_with_their_reason() {
        let cases: [(&[u8], Stream, &str); 6] = [
            (b"not json", Stream::Orders, "invalid_json"),
            (br#"{"eventType": "OrderShipped", "schemaVersion": 1}"#, Stream::Orders, "unknown_event_type"),
            (br#"{"eventType": "OrderCreated", "schemaVersion": 2}"#, Stream::Orders, "unsupported_schema_version"),
            (br#"{"eventType": "OrderCreated", "schemaVersion": 1, "payload": {}}"#, Stream::Orders, "invalid_payload"),
            (br#"{"eventType": "ProductCreated", "schemaVersion": 1}"#, Stream::Orders, "wrong_queue"),
            (br#"{"eventType": "OrderCreated", "schemaVersion": 1}"#, Stream::Products, "wrong_queue"),
        ];
        for (body, stream, kind) in cases {
            assert_eq!(parse(body, stream).unwrap_err().kind, kind, "{}", String::from_utf8_lossy(body));
        }
    }

    /// Amounts whose product or sum would overflow (a panic in the fold, before) or could never be stored
    /// make the message poison, with its own reason; the largest storable ones parse.
    #[test]
    fn an_order_whose_amounts_cannot_be_stored_is_poison() {
        assert_eq!(MAX_AMOUNT, Decimal::from(1_000_000_000_000_000_000_i64));
        let body = |price: &str, quantity: i64, total: &str| {
            format!(
                r#"{{"eventId":"00000000-0000-0000-0000-000000000001","eventType":"OrderCreated","schemaVersion":1,
                    "occurredAt":"2026-11-24T10:00:00.000Z","aggregateId":1,"payload":{{"orderId":1,"customerId":1,
                    "orderedAt":"2026-11-24T10:00:00.000Z","total":{total},"items":[{{"productId":1,"productName":"A",
                    "category":"B","unitPrice":{price},"quantity":{quantity}}}]}}}}"#
            )
        };
        let huge = "79228162514264337593543950335";
        for (price, quantity, total) in [
            (huge, 10, "1"),
            ("1000000000000000000", 1, "1"),
            ("1", 1, "1000000000000000000"),
            ("600000000000000000", 2, "1"),
            // Each amount small, but such quantities would overflow the views' unit counters.
            ("0.01", 5_000_000_000_000_000_000, "1"),
            ("1", 0, "1"),
        ] {
            let poison = parse(body(price, quantity, total).as_bytes(), Stream::Orders).unwrap_err();
            assert_eq!(poison.kind, "amount_overflow", "{price} × {quantity}, total {total}");
        }
        assert!(parse(body("999999999999999999.99", 1, "999999999999999999.99").as_bytes(), Stream::Orders).is_ok());
    }

    #[test]
    fn only_a_refusal_of_the_data_is_the_messages_fault() {
        use sqlx::error::{DatabaseError, ErrorKind};
        #[derive(Debug)]
        struct Coded(&'static str);
        impl std::fmt::Display for Coded {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "SQLSTATE {}", self.0)
            }
        }
        impl std::error::Error for Coded {}
        impl DatabaseError for Coded {
            fn message(&self) -> &str {
                self.0
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> ErrorKind {
                ErrorKind::Other
            }
        }
        let database = |code| sqlx::Error::Database(Box::new(Coded(code)));
        // Numeric overflow, NUL in text, a check constraint, an index row too large: the message's fault.
        for code in ["22003", "22021", "23514", "54000"] {
            assert!(is_refusal(&database(code)), "{code}");
        }
        // Read-only after a failover, disk full, statement timeout, I/O error, deadlock, shutdown.
        for code in ["25006", "53100", "57014", "58030", "40P01", "57P01"] {
            assert!(!is_refusal(&database(code)), "{code}");
        }
        assert!(!is_refusal(&sqlx::Error::PoolTimedOut));
    }

    #[test]
    fn a_valid_event_parses_with_the_hash_of_its_exact_body() {
        let event = Envelope::new(
            EventType::ProductCreated,
            Utc::now(),
            1,
            ProductState {
                product_id: 1,
                name: "A".into(),
                category: "C".into(),
                price: "1.50".parse().unwrap(),
                stock: 1,
                version: 1,
            },
        );
        let body = event.to_body();
        let incoming = parse(&body, Stream::Products).unwrap();
        assert_eq!(incoming.hash, body_hash(&body));
        assert_eq!(incoming.message, Message::Product(event));
    }
}
