//! `/api/analytics/*`: sales per product, revenue per category, customer lifetime value and sync-status,
//! plus hourly sales, top products and all categories.

use analytics_events::{Money, SyncStatusResponse, timestamp};
use analytics_kit::http::{ErrorBody, Json, Path, PositiveId, Query};
use axum::extract::State;
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    error::{QueryError, Result},
};
use crate::{
    read_model::{self, TopBy},
    sync,
};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductSalesResponse {
    product_id: i64,
    total_quantity_sold: i64,
    total_revenue: Money,
    order_count: i64,
}

/// Sales of one product: Σ quantity, Σ quantity × unit price, and the number of distinct orders.
#[utoipa::path(get, path = "/api/analytics/products/{id}/sales", tag = "analytics", operation_id = "getProductSales",
    params(("id" = i64, Path, minimum = 1, description = "Product id")), responses(
    (status = 200, description = "Zeros for a known product without sales", body = ProductSalesResponse),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "Unknown product", body = ErrorBody),
))]
#[tracing::instrument(name = "product_sales", skip_all, fields(product_id = id))]
pub async fn product_sales(
    State(state): State<AppState>,
    PositiveId(id): PositiveId,
) -> Result<Json<ProductSalesResponse>> {
    let sales =
        state.db.read(|| read_model::product_sales(&state.db, id)).await?.ok_or(QueryError::ProductNotFound(id))?;
    Ok(Json(ProductSalesResponse {
        product_id: id,
        total_quantity_sold: sales.total_quantity_sold,
        total_revenue: sales.total_revenue,
        order_count: sales.order_count,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopParams {
    /// `revenue` (default) or `quantity`.
    #[param(inline)]
    by: Option<TopBy>,
    /// How many (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopProduct {
    product_id: i64,
    product_name: String,
    category: String,
    total_quantity_sold: i64,
    total_revenue: Money,
    order_count: i64,
}

/// The best-selling products.
#[utoipa::path(get, path = "/api/analytics/products/top", tag = "analytics", operation_id = "getTopProducts", params(TopParams), responses(
    (status = 200, description = "The best-selling products, best first", body = Vec<TopProduct>),
    (status = 400, description = "Unknown `by` or a limit outside 1..=100", body = ErrorBody),
))]
#[tracing::instrument(name = "top_products", skip_all)]
pub async fn top_products(
    State(state): State<AppState>,
    Query(params): Query<TopParams>,
) -> Result<Json<Vec<TopProduct>>> {
    let limit = params.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(QueryError::InvalidQuery(format!("limit must be from 1 to 100, got {limit}")));
    }
    let rows =
        state.db.read(|| read_model::top_products(&state.db, params.by.unwrap_or(TopBy::Revenue), limit)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| TopProduct {
                product_id: row.product_id,
                product_name: row.product_name,
                category: row.category,
                total_quantity_sold: row.total_quantity_sold,
                total_revenue: row.total_revenue.into(),
                order_count: row.order_count,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryRevenue {
    category: String,
    total_revenue: Money,
    /// Distinct orders with at least one item in the category.
    total_orders: i64,
}

/// Revenue of one category and the number of distinct orders that touched it.
#[utoipa::path(get, path = "/api/analytics/categories/{category}/revenue", tag = "analytics", operation_id = "getCategoryRevenue",
    params(("category" = String, Path, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$", description = "Category name")), responses(
    (status = 200, description = "Zeros for a category with products but no sales", body = CategoryRevenue),
    (status = 400, description = "The category contains a control character, which no category has", body = ErrorBody),
    (status = 404, description = "Unknown category", body = ErrorBody),
))]
#[tracing::instrument(name = "category_revenue", skip_all, fields(category = %category.escape_debug()))]
pub async fn category_revenue(
    State(state): State<AppState>,
    Path(category): Path<String>,
) -> Result<Json<CategoryRevenue>> {
    // The command API stores names in normalization form C: `Café` finds its category however its
    // accent was typed.
    let category: String = unicode_normalization::UnicodeNormalization::nfc(category.as_str()).collect();
    // The command API refuses control characters in a category, and PostgreSQL's text cannot hold NUL.
    if category.chars().any(char::is_control) {
        return Err(QueryError::InvalidQuery("a category never contains control characters".to_owned()));
    }
    let row = state
        .db
        .read(|| read_model::category(&state.db, &category))
        .await?
        .ok_or(QueryError::CategoryNotFound(category))?;
    Ok(Json(CategoryRevenue {
        category: row.category,
        total_revenue: row.total_revenue.into(),
        total_orders: row.total_orders,
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryTotals {
    category: String,
    total_revenue: Money,
    total_orders: i64,
    total_quantity: i64,
}

/// Every category with its totals, by revenue.
#[utoipa::path(get, path = "/api/analytics/categories", tag = "analytics", operation_id = "listCategories", responses(
    (status = 200, description = "Every category, by revenue", body = Vec<CategoryTotals>),
))]
#[tracing::instrument(name = "categories", skip_all)]
pub async fn categories(State(state): State<AppState>) -> Result<Json<Vec<CategoryTotals>>> {
    let rows = state.db.read(|| read_model::categories(&state.db)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| CategoryTotals {
                category: row.category,
                total_revenue: row.total_revenue.into(),
                total_orders: row.total_orders,
                total_quantity: row.total_quantity,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeValue {
    customer_id: i64,
    total_spent: Money,
    order_count: i64,
    /// The latest order time, UTC; null without orders.
    #[serde(with = "timestamp::option")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-11-24T05:53:46.123Z")]
    last_order_date: Option<DateTime<Utc>>,
}

/// What a customer has spent over all their orders.
#[utoipa::path(get, path = "/api/analytics/customers/{id}/lifetime-value", tag = "analytics", operation_id = "getCustomerLifetimeValue",
    params(("id" = i64, Path, minimum = 1, description = "Customer id")), responses(
    (status = 200, description = "Zeros for a customer without orders", body = LifetimeValue),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
))]
#[tracing::instrument(name = "customer_lifetime_value", skip_all, fields(customer_id = id))]
pub async fn customer_lifetime_value(
    State(state): State<AppState>,
    PositiveId(id): PositiveId,
) -> Result<Json<LifetimeValue>> {
    let value = state.db.read(|| read_model::customer(&state.db, id)).await?;
    Ok(Json(LifetimeValue {
        customer_id: id,
        total_spent: value.total_spent,
        order_count: value.order_count,
        last_order_date: value.last_order_at,
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCategories {
    customer_id: i64,
    /// The categories the customer bought in, by revenue, largest first.
    categories: Vec<CustomerCategory>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCategory {
    category: String,
    total_revenue: Money,
    total_quantity: i64,
    /// The customer's orders with at least one item in the category.
    order_count: i64,
}

/// What a customer has bought, per category.
#[utoipa::path(get, path = "/api/analytics/customers/{id}/categories", tag = "analytics", operation_id = "getCustomerCategories",
    params(("id" = i64, Path, minimum = 1, description = "Customer id")), responses(
    (status = 200, description = "An empty list for a customer without orders", body = CustomerCategories),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
))]
#[tracing::instrument(name = "customer_categories", skip_all, fields(customer_id = id))]
pub async fn customer_categories(
    State(state): State<AppState>,
    PositiveId(id): PositiveId,
) -> Result<Json<CustomerCategories>> {
    let rows = state.db.read(|| read_model::customer_categories(&state.db, id)).await?;
    Ok(Json(CustomerCategories {
        customer_id: id,
        categories: rows
            .into_iter()
            .map(|row| CustomerCategory {
                category: row.category,
                total_revenue: row.total_revenue.into(),
                total_quantity: row.total_quantity,
                order_count: row.order_count,
            })
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HourlyParams {
    /// Start, inclusive, ISO-8601 (default: 24 hours before `to`).
    from: Option<DateTime<Utc>>,
    /// End, exclusive, ISO-8601 (default: now).
    to: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HourlySales {
    /// Start of the UTC hour.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-24T05:00:00.000Z")]
    hour: DateTime<Utc>,
    order_count: i64,
    items_sold: i64,
    revenue: Money,
}

/// Orders, units sold and revenue per UTC hour of the order time. Hours without sales are absent.
#[utoipa::path(get, path = "/api/analytics/sales/hourly", tag = "analytics", operation_id = "getHourlySales", params(HourlyParams), responses(
    (status = 200, description = "One entry per UTC hour with orders in the range, oldest first", body = Vec<HourlySales>),
    (status = 400, description = "A malformed time, one outside the years 1 to 9999, `from` not before `to`, or a range over 366 days", body = ErrorBody),
))]
#[tracing::instrument(name = "hourly_sales", skip_all)]
pub async fn hourly_sales(
    State(state): State<AppState>,
    Query(params): Query<HourlyParams>,
) -> Result<Json<Vec<HourlySales>>> {
    let to = within_years(params.to.unwrap_or_else(Utc::now), "to")?;
    let from = match params.from {
        Some(from) => within_years(from, "from")?,
        None => to - TimeDelta::hours(24),
    };
    if from >= to {
        return Err(QueryError::InvalidQuery("from must be before to".into()));
    }
    if to - from > TimeDelta::days(366) {
        return Err(QueryError::InvalidQuery("the range may span at most 366 days".into()));
    }
    let rows = state.db.read(|| read_model::hourly(&state.db, from, to)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| HourlySales {
                hour: row.hour,
                order_count: row.order_count,
                items_sold: row.items_sold,
                revenue: row.revenue.into(),
            })
            .collect(),
    ))
}

/// `at`, if it falls in the years 1 to 9999: chrono and PostgreSQL reach further, but no sales hour does,
/// and arithmetic near their limits would overflow.
fn within_years(at: DateTime<Utc>, name: &str) -> Result<DateTime<Utc>> {
    if (1..=9999).contains(&at.year()) {
        Ok(at)
    } else {
        Err(QueryError::InvalidQuery(format!("{name} must fall in the years 1 to 9999")))
    }
}

/// How far the read model is behind the write side. See the README's sync-status section.
#[utoipa::path(get, path = "/api/analytics/sync-status", tag = "analytics", operation_id = "getSyncStatus", responses(
    (status = 200, description = "How far the read model is behind the write side", body = SyncStatusResponse),
))]
#[tracing::instrument(name = "sync_status", skip_all)]
pub async fn sync_status(State(state): State<AppState>) -> Result<Json<SyncStatusResponse>> {
    let (progress, depth) = tokio::join!(state.db.read(|| read_model::progress(&state.db)), state.depths.total());
    Ok(Json(sync::assess(Utc::now(), &progress?, depth)))
}
