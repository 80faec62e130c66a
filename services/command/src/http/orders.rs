//! `/api/orders`: place and read orders. Placing one locks its products in id order, checks prices and
//! stock, decrements stock, and writes the order, its lines and OrderCreated in one transaction.

use analytics_events::{Envelope, EventType, Money, OrderCreated, OrderLine, timestamp};
use analytics_kit::http::{ErrorBody, Json, Path};
use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;

use super::{
    AppState,
    error::{ApiError, Result, positive_id},
};
use crate::{
    domain::{NewOrder, OrderRequest},
    outbox,
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
    #[schema(value_type = f64, example = 99.98)]
    pub total: Money,
    /// UTC, millisecond precision.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, example = "2026-11-24T05:53:46.123Z")]
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
    #[schema(value_type = f64, example = 49.99)]
    pub unit_price: Money,
}

#[derive(FromRow)]
struct LockedProduct {
    id: i64,
    name: String,
    category: String,
    price: Decimal,
    stock: i32,
}

/// Place an order. Prices come from the catalog; a client-supplied price must match it.
#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = OrderRequest, responses(
    (status = 201, description = "Accepted; stock is reserved and OrderCreated is in the outbox", body = OrderCreatedResponse),
    (status = 400, description = "Malformed JSON, a missing field or a wrong type", body = ErrorBody),
    (status = 409, description = "Not enough stock (the product is named), or a price that differs from the catalog", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 422, description = "customerId not positive, empty items, quantity < 1, a repeated or unknown productId", body = ErrorBody),
))]
pub async fn create(
    State(state): State<AppState>,
    Json(request): Json<OrderRequest>,
) -> Result<(StatusCode, Json<OrderCreatedResponse>)> {
    let order = NewOrder::try_from(request)?;
    let mut lines = order.lines;
    // Locking in id order means two orders for the same products never wait on each other in a cycle.
    lines.sort_by_key(|line| line.product_id);
    let ids: Vec<i64> = lines.iter().map(|line| line.product_id.get()).collect();

    let mut tx = state.pool.begin().await?;
    let products: Vec<LockedProduct> = sqlx::query_as(
        "select id, name, category, price, stock from products where id = any($1) order by id for update",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    if products.len() != ids.len() {
        let missing = ids.iter().copied().filter(|id| !products.iter().any(|p| p.id == *id)).collect();
        return Err(ApiError::UnknownProducts(missing));
    }

    // Both lists are sorted by id and hold the same ids, so they pair up one to one.
    let mut items = Vec::with_capacity(lines.len());
    for (line, product) in lines.iter().zip(&products) {
        let catalog = Money::from(product.price);
        if let Some(given) = line.expected_price.filter(|given| *given != catalog) {
            return Err(ApiError::PriceMismatch {
                product_id: product.id,
                name: product.name.clone(),
                given: given.to_string(),
                catalog: catalog.to_string(),
            });
        }
        if product.stock < line.quantity.get() {
            return Err(ApiError::InsufficientStock {
                product_id: product.id,
                name: product.name.clone(),
                available: product.stock,
                requested: line.quantity.get(),
            });
        }
        items.push(OrderLine {
            product_id: product.id,
            product_name: product.name.clone(),
            category: product.category.clone(),
            unit_price: catalog,
            quantity: line.quantity.get().into(),
        });
    }
    let total: Money = items.iter().map(|item| item.unit_price * item.quantity).sum();
    let ordered_at = timestamp::truncate(Utc::now());
    let quantities: Vec<i32> = lines.iter().map(|line| line.quantity.get()).collect();
    let prices: Vec<Decimal> = items.iter().map(|item| item.unit_price.amount()).collect();

    // Data-modifying CTEs all run, once, whether or not the final select reads them.
    let (order_id,): (i64,) = sqlx::query_as(
        "with stock as (
             update products p set stock = p.stock - l.quantity
               from unnest($1::bigint[], $2::int[]) as l(id, quantity)
              where p.id = l.id
         ), new_order as (
             insert into orders (customer_id, total, created_at) values ($3, $4, $5) returning id
         ), lines as (
             insert into order_items (order_id, product_id, quantity, unit_price)
             select new_order.id, l.id, l.quantity, l.price
               from new_order, unnest($1::bigint[], $2::int[], $6::numeric[]) as l(id, quantity, price)
         )
         select id from new_order",
    )
    .bind(&ids)
    .bind(&quantities)
    .bind(order.customer_id.get())
    .bind(total.amount())
    .bind(ordered_at)
    .bind(&prices)
    .fetch_one(&mut *tx)
    .await?;

    let event = Envelope::new(
        EventType::OrderCreated,
        ordered_at,
        order_id,
        OrderCreated { order_id, customer_id: order.customer_id.get(), ordered_at, total, items },
    );
    outbox::enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok((StatusCode::CREATED, Json(OrderCreatedResponse { order_id })))
}

#[derive(FromRow)]
struct OrderRow {
    id: i64,
    customer_id: i64,
    total: Decimal,
    created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ItemRow {
    product_id: i64,
    name: String,
    category: String,
    quantity: i32,
    unit_price: Decimal,
}

/// Read an order with its items.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path, description = "Order id")), responses(
    (status = 200, body = OrderResponse),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "No such order", body = ErrorBody),
))]
pub async fn get(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<OrderResponse>> {
    let id = positive_id(id, "order id")?;
    let order: Option<OrderRow> = sqlx::query_as("select id, customer_id, total, created_at from orders where id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    let order = order.ok_or(ApiError::OrderNotFound(id))?;
    let items: Vec<ItemRow> = sqlx::query_as(
        "select i.product_id, p.name, p.category, i.quantity, i.unit_price
           from order_items i join products p on p.id = i.product_id
          where i.order_id = $1
          order by i.product_id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(OrderResponse {
        order_id: order.id,
        customer_id: order.customer_id,
        total: order.total.into(),
        created_at: order.created_at,
        items: items
            .into_iter()
            .map(|item| OrderItemResponse {
                product_id: item.product_id,
                product_name: item.name,
                category: item.category,
                quantity: item.quantity,
                unit_price: item.unit_price.into(),
            })
            .collect(),
    }))
}
