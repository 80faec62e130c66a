//! Request bodies become these types through `TryFrom`; nothing reaches SQL unparsed. [`price`] holds
//! the rules an order must meet against the catalog.

mod order;
mod pricing;
mod product;

pub use order::{CustomerId, NewOrder, NewOrderLine, OrderLineRequest, OrderRequest, Quantity};
pub use pricing::{CatalogEntry, PricedOrder, Refusal, price};
pub use product::{NewProduct, Price, ProductChange, ProductId, ProductPatchRequest, ProductRequest, Stock};

/// Why a well-formed request cannot be accepted (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// `raw` if it is a positive integer; otherwise why `field` is refused.
fn positive(raw: i64, field: &str) -> Result<i64, Invalid> {
    if raw > 0 { Ok(raw) } else { Err(Invalid::new(format!("{field} must be a positive integer, got {raw}"))) }
}

/// JSON integers as JSON Schema counts them: `5` and also `5.0` (a number whose fraction is zero), so
/// that what the OpenAPI document calls an integer is accepted as one. `5.5` is refused.
pub(crate) mod integer {
    use rust_decimal::{Decimal, prelude::ToPrimitive};
    use serde::{Deserialize, Deserializer, de::Error as _};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        if let Some(integer) = number.as_i64() {
            return Ok(integer);
        }
        let text = number.as_str();
        let value = Decimal::from_str_exact(text).or_else(|_| Decimal::from_scientific(text)).ok();
        match value {
            Some(value) if value.fract().is_zero() => {
                value.to_i64().ok_or_else(|| D::Error::custom(format!("{text} is out of range for an integer")))
            }
            _ => Err(D::Error::custom(format!("expected an integer, got {text}"))),
        }
    }

    /// The same for an optional field: absent or `null` is `None`.
    pub mod option {
        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
            #[derive(Deserialize)]
            struct Integer(#[serde(deserialize_with = "super::deserialize")] i64);
            Ok(Option::<Integer>::deserialize(deserializer)?.map(|Integer(value)| value))
        }
    }

    #[cfg(test)]
    mod tests {
        #[derive(Debug, serde::Deserialize)]
        struct Field(#[serde(deserialize_with = "super::deserialize")] i64);

        #[test]
        fn an_integral_number_is_an_integer_and_a_fraction_is_refused() {
            for (json, expected) in [("5", 5), ("5.0", 5), ("-3", -3), ("1e3", 1000), ("9223372036854775807", i64::MAX)]
            {
                assert_eq!(serde_json::from_str::<Field>(json).unwrap().0, expected, "{json}");
            }
            for json in ["5.5", "1e-1", "9223372036854775808", "\"5\"", "null"] {
                assert!(serde_json::from_str::<Field>(json).is_err(), "{json}");
            }
        }
    }
}
