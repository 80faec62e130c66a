//! `/api/products`: create, read and change catalog entries. Each write emits its event in the same transaction.

use analytics_events::{Envelope, EventType, Money, ProductState};
use analytics_kit::http::{ErrorBody, Json, Path};
use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;

use super::{
    AppState,
    error::{ApiError, Result, positive_id},
};
use crate::{
    domain::{NewProduct, ProductChange, ProductPatchRequest, ProductRequest},
    outbox,
};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductCreatedResponse {
    pub product_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    pub id: i64,
    pub name: String,
    pub category: String,
    #[schema(value_type = f64, example = 49.99)]
    pub price: Money,
    pub stock: i32,
}

#[derive(FromRow)]
struct ProductRow {
    id: i64,
    name: String,
    category: String,
    price: Decimal,
    stock: i32,
    version: i64,
}

impl ProductRow {
    fn response(&self) -> ProductResponse {
        ProductResponse {
            id: self.id,
            name: self.name.clone(),
            category: self.category.clone(),
            price: self.price.into(),
            stock: self.stock,
        }
    }
}

/// Add a product to the catalog.
#[utoipa::path(post, path = "/api/products", tag = "products", request_body = ProductRequest, responses(
    (status = 201, description = "Created; ProductCreated is in the outbox", body = ProductCreatedResponse),
    (status = 400, description = "Malformed JSON, a missing field or a wrong type", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 422, description = "Empty name or category, price <= 0 or with more than 2 decimals, stock < 0", body = ErrorBody),
))]
pub async fn create(
    State(state): State<AppState>,
    Json(request): Json<ProductRequest>,
) -> Result<(StatusCode, Json<ProductCreatedResponse>)> {
    let product = NewProduct::try_from(request)?;
    let mut tx = state.pool.begin().await?;
    let (product_id,): (i64,) =
        sqlx::query_as("insert into products (name, category, price, stock) values ($1, $2, $3, $4) returning id")
            .bind(&product.name)
            .bind(&product.category)
            .bind(product.price.get().amount())
            .bind(product.stock.get())
            .fetch_one(&mut *tx)
            .await?;
    let event = Envelope::new(
        EventType::ProductCreated,
        Utc::now(),
        product_id,
        ProductState {
            product_id,
            name: product.name,
            category: product.category,
            price: product.price.get(),
            stock: product.stock.get().into(),
            version: 1,
        },
    );
    outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((StatusCode::CREATED, Json(ProductCreatedResponse { product_id })))
}

/// Read a product as the catalog has it now.
#[utoipa::path(get, path = "/api/products/{id}", tag = "products", params(("id" = i64, Path, description = "Product id")), responses(
    (status = 200, body = ProductResponse),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "No such product", body = ErrorBody),
))]
pub async fn get(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<ProductResponse>> {
    let id = positive_id(id, "product id")?;
    let row: Option<ProductRow> =
        sqlx::query_as("select id, name, category, price, stock, version from products where id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    let row = row.ok_or(ApiError::ProductNotFound(id))?;
    Ok(Json(row.response()))
}

/// Change the price, add stock, or both. Emits ProductUpdated with the product's new state.
#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", params(("id" = i64, Path, description = "Product id")),
    request_body = ProductPatchRequest, responses(
    (status = 200, description = "The product after the change", body = ProductResponse),
    (status = 400, description = "Malformed JSON, an unknown field or a wrong type", body = ErrorBody),
    (status = 404, description = "No such product", body = ErrorBody),
    (status = 422, description = "Empty change, invalid price, or addStock < 1", body = ErrorBody),
))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(request): Json<ProductPatchRequest>,
) -> Result<Json<ProductResponse>> {
    let id = positive_id(id, "product id")?;
    let change = ProductChange::try_from(request)?;
    let mut tx = state.pool.begin().await?;
    let row: Option<ProductRow> = sqlx::query_as(
        "update products
            set price = coalesce($2, price), stock = stock + coalesce($3, 0), version = version + 1, updated_at = now()
          where id = $1
      returning id, name, category, price, stock, version",
    )
    .bind(id)
    .bind(change.price.map(|price| price.get().amount()))
    .bind(change.add_stock.map(|units| units.get()))
    .fetch_optional(&mut *tx)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22003") => ApiError::StockOverflow(id),
        _ => ApiError::Database(error),
    })?;
    let row = row.ok_or(ApiError::ProductNotFound(id))?;
    let event = Envelope::new(
        EventType::ProductUpdated,
        Utc::now(),
        row.id,
        ProductState {
            product_id: row.id,
            name: row.name.clone(),
            category: row.category.clone(),
            price: row.price.into(),
            stock: row.stock.into(),
            version: row.version,
        },
    );
    outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(Json(row.response()))
}
