//! Exact money: a decimal in Rust, NUMERIC in SQL, and a JSON number written digit for digit.

use std::{fmt, str::FromStr};

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// An exact decimal amount. On the wire it is a JSON number with no trailing zeros (`0.3`, never
/// `0.30000000000000004` nor `0.30`); it never passes through a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("{0:?} is not a decimal number")]
    NotANumber(String),
}

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    pub fn new(value: Decimal) -> Self {
        Self(value)
    }

    pub fn amount(self) -> Decimal {
        self.0
    }

    /// Digits after the decimal point once trailing zeros are dropped: `49.90` has 1.
    pub fn decimal_places(self) -> u32 {
        self.0.normalize().scale()
    }
}

impl From<Decimal> for Money {
    fn from(value: Decimal) -> Self {
        Self(value)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Accepts what JSON accepts for a number, including exponents (`4.999e1`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(text)
            .or_else(|_| Decimal::from_scientific(text))
            .map(Self)
            .map_err(|_| MoneyError::NotANumber(text.to_owned()))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json's arbitrary_precision keeps the number's text as it is.
        let number = serde_json::Number::from_str(&self.to_string()).map_err(serde::ser::Error::custom)?;
        number.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        number.as_str().parse().map_err(D::Error::custom)
    }
}

/// In an OpenAPI document: a JSON number (no `format`: it is neither a float nor a double, and is never
/// rounded like one).
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        money_schema("An exact decimal amount, written digit for digit.").into()
    }
}

impl utoipa::ToSchema for Money {}

/// The schema of an amount of money, described by `description`, for a field to refine with limits.
pub fn money_schema(description: &str) -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Number)
        .description(Some(description))
        .examples([serde_json::json!(49.99)])
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl std::ops::Mul<i64> for Money {
    type Output = Money;
    fn mul(self, rhs: i64) -> Money {
        Money(self.0 * Decimal::from(rhs))
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    #[test]
    fn a_json_number_round_trips_digit_for_digit() {
        let parsed: Money = serde_json::from_str("49.99").unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), "49.99");
        let big: Money = serde_json::from_str("12345678901234.01").unwrap();
        assert_eq!(serde_json::to_string(&big).unwrap(), "12345678901234.01");
    }

    #[test]
    fn sums_are_exact_and_printed_without_trailing_zeros() {
        let total: Money = [money("0.10"), money("0.10"), money("0.10")].into_iter().sum();
        assert_eq!(serde_json::to_string(&total).unwrap(), "0.3");
        assert_eq!(serde_json::to_string(&(money("2.50") * 2)).unwrap(), "5");
    }

    #[test]
    fn strings_and_other_types_are_not_money() {
        assert!(serde_json::from_str::<Money>("\"49.99\"").is_err());
        assert!(serde_json::from_str::<Money>("true").is_err());
    }

    #[test]
    fn exponents_are_read_exactly() {
        assert_eq!(money("4.999e1"), money("49.99"));
    }

    #[test]
    fn decimal_places_ignore_trailing_zeros() {
        assert_eq!(money("49.990").decimal_places(), 2);
        assert_eq!(money("49.999").decimal_places(), 3);
        assert_eq!(money("50").decimal_places(), 0);
    }
}
