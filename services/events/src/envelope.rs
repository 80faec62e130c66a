//! The versioned event envelope and the message-body hash that makes deliveries idempotent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Stream;

/// The envelope version this build writes and understands. A consumer dead-letters anything else.
pub const SCHEMA_VERSION: u32 = 1;

/// Every event on the broker is one JSON envelope. Field order and names are part of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope<P> {
    /// Unique per event (UUIDv7, so ids sort by creation time).
    pub event_id: Uuid,
    pub event_type: EventType,
    pub schema_version: u32,
    /// When the fact happened on the write side: UTC, millisecond precision.
    #[serde(with = "timestamp")]
    pub occurred_at: DateTime<Utc>,
    /// The id of the product or order the event is about.
    pub aggregate_id: i64,
    pub payload: P,
}

impl<P: Serialize + DeserializeOwned> Envelope<P> {
    /// A new event of this build's schema version.
    pub fn new(event_type: EventType, occurred_at: DateTime<Utc>, aggregate_id: i64, payload: P) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type,
            schema_version: SCHEMA_VERSION,
            occurred_at: timestamp::truncate(occurred_at),
            aggregate_id,
            payload,
        }
    }

    /// The message body. The outbox stores exactly these bytes, so a republished event hashes the same.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }
}

/// What happened. The wire name is the variant name; the routing key is `<aggregate>.<verb>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    ProductCreated,
    ProductUpdated,
    OrderCreated,
    /// Not a domain event: the relay's report of the outbox backlog, sent down each queue so the read
    /// side can tell how far behind it is (see [`crate::Watermark`]).
    Watermark,
}

impl EventType {
    pub const ALL: [EventType; 4] = [Self::ProductCreated, Self::ProductUpdated, Self::OrderCreated, Self::Watermark];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductCreated => "ProductCreated",
            Self::ProductUpdated => "ProductUpdated",
            Self::OrderCreated => "OrderCreated",
            Self::Watermark => "Watermark",
        }
    }

    /// The stream a domain event belongs to; `None` for a watermark, which goes down every stream.
    pub fn stream(self) -> Option<Stream> {
        match self {
            Self::ProductCreated | Self::ProductUpdated => Some(Stream::Products),
            Self::OrderCreated => Some(Stream::Orders),
            Self::Watermark => None,
        }
    }

    /// The topic routing key of a domain event, `<aggregate>.<verb>`. A watermark has one per stream
    /// ([`Stream::watermark_routing_key`]), so `None`.
    pub fn routing_key(self) -> Option<&'static str> {
        match self {
            Self::ProductCreated => Some("product.created"),
            Self::ProductUpdated => Some("product.updated"),
            Self::OrderCreated => Some("order.created"),
            Self::Watermark => None,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The idempotency key of a delivery: the SHA-256 of the exact message body, so a redelivery or a
/// republished outbox row (the same stored bytes) has the same key.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Timestamps on the wire: ISO-8601 UTC with millisecond precision and a `Z` suffix.
pub mod timestamp {
    use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Drops sub-millisecond precision, so a value survives a round trip through the wire format unchanged.
    pub fn truncate(at: DateTime<Utc>) -> DateTime<Utc> {
        at.trunc_subsecs(3)
    }

    pub fn format(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|e| D::Error::custom(format!("invalid timestamp {text:?}: {e}")))
    }

    /// The same format for an optional timestamp, `null` when absent.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] DateTime<Utc>);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(at)| at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Money, ProductState};
    use chrono::TimeZone;

    fn sample() -> Envelope<ProductState> {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 5, 53, 46).unwrap() + chrono::Duration::microseconds(123_456);
        Envelope::new(
            EventType::ProductCreated,
            at,
            7,
            ProductState {
                product_id: 7,
                name: "Lamp".into(),
                category: "Home".into(),
                price: "49.99".parse::<Money>().unwrap(),
                stock: 3,
                version: 1,
            },
        )
    }

    #[test]
    fn the_envelope_has_the_documented_fields_with_millisecond_utc_time() {
        let event = sample();
        let json: serde_json::Value = serde_json::from_slice(&event.to_body()).unwrap();
        assert_eq!(json["eventType"], "ProductCreated");
        assert_eq!(json["schemaVersion"], 1);
        assert_eq!(json["occurredAt"], "2026-11-24T05:53:46.123Z");
        assert_eq!(json["aggregateId"], 7);
        assert_eq!(json["payload"]["price"].to_string(), "49.99");
        assert_eq!(json["eventId"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn an_envelope_round_trips_through_its_body() {
        let event = sample();
        let back: Envelope<ProductState> = serde_json::from_slice(&event.to_body()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn the_body_hash_is_the_sha256_of_the_exact_bytes() {
        assert_eq!(
            body_hash(b"abc").iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let event = sample();
        assert_eq!(body_hash(&event.to_body()), body_hash(&event.to_body()));
    }

    #[test]
    fn event_types_parse_from_their_wire_names_only() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("OrderCancelled"), None);
    }
}
