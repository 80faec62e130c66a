//! Catalog values: names, categories, prices and stock levels that are valid by construction.

use analytics_events::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Invalid, positive};

const MAX_TEXT_CHARS: usize = 200;
const MAX_STOCK: i64 = 1_000_000_000;

/// A product id: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductId(i64);

impl ProductId {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        positive(raw, "productId").map(Self)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A catalog price: greater than zero, at most two decimal places, below 10 000 000 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(Money);

impl Price {
    pub fn parse(raw: Money) -> Result<Self, Invalid> {
        if raw.amount() <= Decimal::ZERO {
            return Err(Invalid::new(format!("price must be greater than 0, got {raw}")));
        }
        if raw.decimal_places() > 2 {
            return Err(Invalid::new(format!("price must have at most 2 decimal places, got {raw}")));
        }
        if raw.amount() >= Decimal::from(10_000_000_000_i64) {
            return Err(Invalid::new(format!("price must be below 10000000000, got {raw}")));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> Money {
        self.0
    }
}

/// Units in stock: an integer from 0 to 1 000 000 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock(i32);

impl Stock {
    pub fn parse(raw: i64, field: &str) -> Result<Self, Invalid> {
        match i32::try_from(raw) {
            Ok(units) if (0..=MAX_STOCK).contains(&raw) => Ok(Self(units)),
            _ => Err(Invalid::new(format!("{field} must be an integer from 0 to {MAX_STOCK}, got {raw}"))),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// `raw` trimmed and in Unicode normalization form C, so that `Café` typed as one code point or as `e`
/// and a combining accent is one name; case stays as given.
fn text(raw: String, field: &str) -> Result<String, Invalid> {
    use unicode_normalization::UnicodeNormalization;
    let normalized: String = raw.trim().nfc().collect();
    let trimmed = normalized.as_str();
    if trimmed.is_empty() {
        return Err(Invalid::new(format!("{field} must not be empty")));
    }
    if trimmed.chars().count() > MAX_TEXT_CHARS {
        return Err(Invalid::new(format!("{field} must be at most {MAX_TEXT_CHARS} characters")));
    }
    // PostgreSQL's text cannot hold NUL, and other control characters have no place in a name.
    if trimmed.chars().any(char::is_control) {
        return Err(Invalid::new(format!("{field} must not contain control characters")));
    }
    Ok(trimmed.to_owned())
}

/// `POST /api/products`; a field it does not know is refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    #[schema(schema_with = name_schema)]
    pub name: String,
    #[schema(schema_with = category_schema)]
    pub category: String,
    #[schema(schema_with = price_schema)]
    pub price: Money,
    /// Units in stock.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "super::integer::deserialize")]
    pub stock: i64,
}

/// What [`text`] accepts, as a pattern: once trimmed, 1 to [`MAX_TEXT_CHARS`] characters, none of them a
/// control character (U+0000 to U+001F, U+007F to U+009F).
pub(crate) fn text_pattern() -> String {
    let visible = r"[^\s\x00-\x1f\x7f-\x9f]";
    let inner = r"[^\x00-\x1f\x7f-\x9f]";
    format!(r"^\s*{visible}(?:{inner}{{0,{}}}{visible})?\s*$", MAX_TEXT_CHARS - 2)
}

fn text_schema(description: &str, example: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(text_pattern()))
        .description(Some(format!(
            "{description}; surrounding whitespace is trimmed, and what remains is 1 to {MAX_TEXT_CHARS} characters without control characters."
        )))
        .examples([serde_json::json!(example)])
        .build()
}

fn name_schema() -> utoipa::openapi::Object {
    text_schema("The product's name", "Desk Lamp")
}

fn category_schema() -> utoipa::openapi::Object {
    text_schema("The product's category", "Home")
}

/// What [`Price::parse`] accepts: more than 0, below 10 000 000 000, at most 2 decimal places.
fn price_builder() -> utoipa::openapi::ObjectBuilder {
    analytics_events::money_schema(
        "A catalog price: an exact decimal with at most 2 decimal places, greater than 0 and below 10000000000.",
    )
    .exclusive_minimum(Some(0))
    .exclusive_maximum(Some(10_000_000_000_i64 as isize))
    .multiple_of(Some(0.01))
}

pub(crate) fn price_schema() -> utoipa::openapi::Object {
    price_builder().build()
}

/// [`price_schema`], or null for none.
pub(crate) fn optional_price_schema() -> utoipa::openapi::Object {
    price_builder()
        .schema_type(utoipa::openapi::schema::SchemaType::Array(vec![
            utoipa::openapi::Type::Number,
            utoipa::openapi::Type::Null,
        ]))
        .build()
}

/// A product that may enter the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub name: String,
    pub category: String,
    pub price: Price,
    pub stock: Stock,
}

impl TryFrom<ProductRequest> for NewProduct {
    type Error = Invalid;

    fn try_from(request: ProductRequest) -> Result<Self, Invalid> {
        Ok(Self {
            name: text(request.name, "name")?,
            category: text(request.category, "category")?,
            price: Price::parse(request.price)?,
            stock: Stock::parse(request.stock, "stock")?,
        })
    }
}

/// `PATCH /api/products/{id}`: a new price, more stock, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductPatchRequest {
    /// The new catalog price.
    #[schema(schema_with = optional_price_schema)]
    pub price: Option<Money>,
    /// Units to add to the stock.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "super::integer::option::deserialize")]
    pub add_stock: Option<i64>,
}

/// A change to a product; never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductChange {
    pub price: Option<Price>,
    pub add_stock: Option<Stock>,
}

impl TryFrom<ProductPatchRequest> for ProductChange {
    type Error = Invalid;

    fn try_from(request: ProductPatchRequest) -> Result<Self, Invalid> {
        if request.price.is_none() && request.add_stock.is_none() {
            return Err(Invalid::new("a change needs price, addStock or both"));
        }
        let add_stock = match request.add_stock {
            Some(0) => return Err(Invalid::new("addStock must be at least 1")),
            Some(units) => Some(Stock::parse(units, "addStock")?),
            None => None,
        };
        Ok(Self { price: request.price.map(Price::parse).transpose()?, add_stock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, category: &str, price: &str, stock: i64) -> ProductRequest {
        ProductRequest { name: name.into(), category: category.into(), price: price.parse().unwrap(), stock }
    }

    #[test]
    fn a_valid_product_is_trimmed_and_kept_exact() {
        let product = NewProduct::try_from(request(" Lamp ", "Home", "49.99", 0)).unwrap();
        assert_eq!(product.name, "Lamp");
        assert_eq!(product.price.get().to_string(), "49.99");
        assert_eq!(product.stock.get(), 0);
    }

    #[test]
    fn invalid_products_are_refused_with_the_field_named() {
        let cases = [
            (request("", "Home", "1", 1), "name"),
            (request("  ", "Home", "1", 1), "name"),
            (request("Lamp", "", "1", 1), "category"),
            (request("Lamp", "Home", "0", 1), "price"),
            (request("Lamp", "Home", "-5", 1), "price"),
            (request("Lamp", "Home", "1.999", 1), "price"),
            (request("Lamp", "Home", "10000000000", 1), "price"),
            (request("Lamp", "Home", "1", -1), "stock"),
            (request("Lamp", "Home", "1", 1_000_000_001), "stock"),
        ];
        for (case, field) in cases {
            let error = NewProduct::try_from(case).unwrap_err();
            assert!(error.0.starts_with(field), "{error} should name {field}");
        }
    }

    #[test]
    fn trailing_zeros_do_not_count_as_decimal_places() {
        assert!(NewProduct::try_from(request("Lamp", "Home", "49.990", 1)).is_ok());
    }

    #[test]
    fn an_empty_or_zero_change_is_refused() {
        let empty = ProductPatchRequest { price: None, add_stock: None };
        assert!(ProductChange::try_from(empty).is_err());
        let zero = ProductPatchRequest { price: None, add_stock: Some(0) };
        assert!(ProductChange::try_from(zero).is_err());
    }
}
