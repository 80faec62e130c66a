//! Catalog rows.

use analytics_events::{Money, ProductState};
use rust_decimal::Decimal;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::domain::{NewProduct, ProductChange};

/// A product row as stored, with its version (1 at creation, +1 per change).
#[derive(Debug, FromRow)]
pub struct StoredProduct {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub price: Decimal,
    pub stock: i32,
    pub version: i64,
}

impl StoredProduct {
    /// The product's full state, as ProductCreated and ProductUpdated carry it.
    pub fn state(&self) -> ProductState {
        ProductState {
            product_id: self.id,
            name: self.name.clone(),
            category: self.category.clone(),
            price: Money::from(self.price),
            stock: self.stock.into(),
            version: self.version,
        }
    }
}

pub async fn insert(conn: &mut PgConnection, product: &NewProduct) -> sqlx::Result<StoredProduct> {
    sqlx::query_as(
        "insert into products (name, category, price, stock) values ($1, $2, $3, $4)
         returning id, name, category, price, stock, version",
    )
    .bind(&product.name)
    .bind(&product.category)
    .bind(product.price.get().amount())
    .bind(product.stock.get())
    .fetch_one(conn)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<StoredProduct>> {
    sqlx::query_as("select id, name, category, price, stock, version from products where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// What became of a product change.
#[derive(Debug)]
pub enum Updated {
    Product(StoredProduct),
    NotFound,
    /// The new stock would pass its cap (or not fit the column); nothing changed.
    StockOverflow,
}

/// Applies `change` and bumps the version.
pub async fn update(conn: &mut PgConnection, id: i64, change: &ProductChange) -> sqlx::Result<Updated> {
    let updated = sqlx::query_as(
        "update products
            set price = coalesce($2, price), stock = stock + coalesce($3, 0), version = version + 1, updated_at = now()
          where id = $1
      returning id, name, category, price, stock, version",
    )
    .bind(id)
    .bind(change.price.map(|price| price.get().amount()))
    .bind(change.add_stock.map(|units| units.get()))
    .fetch_optional(conn)
    .await;
    match updated {
        Ok(Some(product)) => Ok(Updated::Product(product)),
        Ok(None) => Ok(Updated::NotFound),
        // The cap's check, or numeric_value_out_of_range: stock + addStock beyond the integer column.
        Err(sqlx::Error::Database(error))
            if error.constraint() == Some("products_stock_at_most_a_billion")
                || error.code().as_deref() == Some("22003") =>
        {
            Ok(Updated::StockOverflow)
        }
        Err(error) => Err(error),
    }
}
