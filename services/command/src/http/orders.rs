//! `/api/orders`: place and read orders. Placing one locks its products, prices it against them
//! ([`domain::price`]), takes the stock, and writes the order, its lines and OrderCreated in one
//! transaction.

use analytics_events::{Envelope, EventType, Money, timestamp};
use analytics_kit::http::{ErrorBody, Json, PositiveId};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AppState,
    error::{ApiError, Result},
    idempotency::{self, Idempotency},
};
use crate::{
    domain::{self, NewOrder, OrderRequest},
    outbox, store,
};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreatedResponse {
    pub order_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderResponse {
    pub order_id: i64,
    pub customer_id: i64,
    pub total: Money,
    /// UTC, millisecond precision.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-24T05:53:46.123Z")]
    pub created_at: DateTime<Utc>,
    pub items: Vec<OrderItemResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemResponse {
    pub product_id: i64,
    pub product_name: String,
    pub category: String,
    pub quantity: i32,
    pub unit_price: Money,
}

/// Place an order. Prices come from the catalog; a client-supplied price must match it.
#[utoipa::path(post, path = "/api/orders", tag = "orders", operation_id = "createOrder", request_body = OrderRequest, responses(
    (status = 201, description = "Accepted; stock is reserved and OrderCreated is in the outbox", body = OrderCreatedResponse),
    (status = 400, description = "Malformed JSON, a missing field or a wrong type", body = ErrorBody),
    (status = 409, description = "Not enough stock (the product is named), or a price that differs from the catalog", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 422, description = "customerId not positive, empty items, quantity < 1, a repeated or unknown productId, a total over 999999999999.99, or an Idempotency-Key used for a different request", body = ErrorBody),
), params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7e]{1,255}$", description = "Makes a retry safe: the same key and body return the first response (1 to 255 visible ASCII characters, kept 24 h)")))]
#[tracing::instrument(name = "create_order", skip_all, fields(customer_id = request.customer_id, lines = request.items.len(), order_id))]
pub async fn create(
    State(state): State<AppState>,
    idempotency: Idempotency,
    Json(request): Json<OrderRequest>,
) -> Result<Response> {
    let fingerprint = Idempotency::fingerprint("POST /api/orders", &request);
    let order = NewOrder::try_from(request)?;
    let ids: Vec<i64> = order.lines.iter().map(|line| line.product_id.get()).collect();
    let mut tx = state.db.begin().await?;
    if let Some(earlier) = idempotency.claim(&mut tx, &fingerprint).await? {
        return Ok((StatusCode::CREATED, [idempotency::REPLAYED], axum::Json(earlier)).into_response());
    }
    let catalog = store::orders::lock_products(&mut tx, &ids).await?;
    let priced = domain::price(order, &catalog)?;
    let ordered_at = timestamp::truncate(Utc::now());
    let order_id = store::orders::insert(&mut tx, &priced, ordered_at).await?;
    tracing::Span::current().record("order_id", order_id);
    let event = Envelope::new(EventType::OrderCreated, ordered_at, order_id, priced.created(order_id, ordered_at));
    outbox::enqueue(&mut tx, &event).await?;
    let response = OrderCreatedResponse { order_id };
    idempotency.record(&mut tx, &response).await?;
    tx.commit().await.map_err(ApiError::CommitUnknown)?;
    state.committed();
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// Read an order with its items.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", operation_id = "getOrder", params(("id" = i64, Path, minimum = 1, description = "Order id")), responses(
    (status = 200, description = "The order with its items, at the prices it was placed at", body = OrderResponse),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "No such order", body = ErrorBody),
))]
#[tracing::instrument(name = "get_order", skip_all, fields(order_id = id))]
pub async fn get(State(state): State<AppState>, PositiveId(id): PositiveId) -> Result<Json<OrderResponse>> {
    let order = state.db.read(|| store::orders::get(&state.db, id)).await?.ok_or(ApiError::OrderNotFound(id))?;
    Ok(Json(OrderResponse {
        order_id: order.id,
        customer_id: order.customer_id,
        total: order.total.into(),
        created_at: order.created_at,
        items: order
            .lines
            .into_iter()
            .map(|line| OrderItemResponse {
                product_id: line.product_id,
                product_name: line.name,
                category: line.category,
                quantity: line.quantity,
                unit_price: line.unit_price.into(),
            })
            .collect(),
    }))
}
