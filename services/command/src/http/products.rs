//! `/api/products`: create, read and change catalog entries. Each write emits its event in the same transaction.

use analytics_events::{Envelope, EventType, Money};
use analytics_kit::http::{ErrorBody, Json, PositiveId};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AppState,
    error::{ApiError, Result},
    idempotency::{self, Idempotency},
};
use crate::{
    domain::{NewProduct, ProductChange, ProductPatchRequest, ProductRequest},
    outbox,
    store::{
        self,
        products::{StoredProduct, Updated},
    },
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
    pub price: Money,
    pub stock: i32,
}

impl From<StoredProduct> for ProductResponse {
    fn from(row: StoredProduct) -> Self {
        Self { id: row.id, name: row.name, category: row.category, price: row.price.into(), stock: row.stock }
    }
}

/// Add a product to the catalog.
#[utoipa::path(post, path = "/api/products", tag = "products", operation_id = "createProduct", request_body = ProductRequest, responses(
    (status = 201, description = "Created; ProductCreated is in the outbox", body = ProductCreatedResponse),
    (status = 400, description = "Malformed JSON, a missing field or a wrong type", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 422, description = "Empty name or category, price <= 0 or with more than 2 decimals, stock < 0, or an Idempotency-Key used for a different request", body = ErrorBody),
), params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7e]{1,255}$", description = "Makes a retry safe: the same key and body return the first response (1 to 255 visible ASCII characters, kept 24 h)")))]
#[tracing::instrument(name = "create_product", skip_all, fields(product_id))]
pub async fn create(
    State(state): State<AppState>,
    idempotency: Idempotency,
    Json(request): Json<ProductRequest>,
) -> Result<Response> {
    let fingerprint = Idempotency::fingerprint("POST /api/products", &request);
    let product = NewProduct::try_from(request)?;
    let mut tx = state.db.begin().await?;
    if let Some(earlier) = idempotency.claim(&mut tx, &fingerprint).await? {
        return Ok((StatusCode::CREATED, [idempotency::REPLAYED], axum::Json(earlier)).into_response());
    }
    let row = store::products::insert(&mut tx, &product).await?;
    tracing::Span::current().record("product_id", row.id);
    outbox::enqueue(&mut tx, &Envelope::new(EventType::ProductCreated, Utc::now(), row.id, row.state())).await?;
    let response = ProductCreatedResponse { product_id: row.id };
    idempotency.record(&mut tx, &response).await?;
    tx.commit().await.map_err(ApiError::CommitUnknown)?;
    state.committed();
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// Read a product as the catalog has it now.
#[utoipa::path(get, path = "/api/products/{id}", tag = "products", operation_id = "getProduct", params(("id" = i64, Path, minimum = 1, description = "Product id")), responses(
    (status = 200, description = "The product, with its current price and stock", body = ProductResponse),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "No such product", body = ErrorBody),
))]
#[tracing::instrument(name = "get_product", skip_all, fields(product_id = id))]
pub async fn get(State(state): State<AppState>, PositiveId(id): PositiveId) -> Result<Json<ProductResponse>> {
    let row = state.db.read(|| store::products::get(&state.db, id)).await?.ok_or(ApiError::ProductNotFound(id))?;
    Ok(Json(row.into()))
}

/// Change the price, add stock, or both. Emits ProductUpdated with the product's new state.
#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", operation_id = "updateProduct", params(("id" = i64, Path, minimum = 1, description = "Product id")),
    request_body = ProductPatchRequest, responses(
    (status = 200, description = "The product after the change", body = ProductResponse),
    (status = 400, description = "Malformed JSON, an unknown field or a wrong type", body = ErrorBody),
    (status = 404, description = "No such product", body = ErrorBody),
    (status = 422, description = "Empty change, invalid price, addStock < 1, or a stock beyond what can be stored", body = ErrorBody),
))]
#[tracing::instrument(name = "update_product", skip_all, fields(product_id = id))]
pub async fn update(
    State(state): State<AppState>,
    PositiveId(id): PositiveId,
    Json(request): Json<ProductPatchRequest>,
) -> Result<Json<ProductResponse>> {
    let change = ProductChange::try_from(request)?;
    let mut tx = state.db.begin().await?;
    let row = match store::products::update(&mut tx, id, &change).await? {
        Updated::Product(row) => row,
        Updated::NotFound => return Err(ApiError::ProductNotFound(id)),
        Updated::StockOverflow => return Err(ApiError::StockOverflow(id)),
    };
    outbox::enqueue(&mut tx, &Envelope::new(EventType::ProductUpdated, Utc::now(), row.id, row.state())).await?;
    tx.commit().await.map_err(ApiError::CommitUnknown)?;
    state.committed();
    Ok(Json(row.into()))
}
