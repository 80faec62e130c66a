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

fn text(raw: String, field: &str) -> Result<String, Invalid> {
    let trimmed = raw.trim();
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

/// `POST /api/products`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductRequest {
    pub name: String,
    pub category: String,
    /// An exact decimal with at most 2 places, greater than 0.
    #[schema(value_type = f64, example = 49.99)]
    pub price: Money,
    /// Units in stock, 0 or more.
    pub stock: i64,
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
    #[schema(value_type = Option<f64>, example = 44.99)]
    pub price: Option<Money>,
    /// Units to add to the stock (at least 1).
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
