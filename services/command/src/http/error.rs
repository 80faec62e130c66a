//! The command API's errors and the status code and JSON body of each.

use analytics_kit::http::error_response;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::domain::{Invalid, Refusal};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0} must be a positive integer")]
    InvalidId(&'static str),
    #[error("product {0} does not exist")]
    ProductNotFound(i64),
    #[error("order {0} does not exist")]
    OrderNotFound(i64),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("stock of product {0} would exceed the largest storable value")]
    StockOverflow(i64),
    #[error("internal error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            Self::ProductNotFound(_) | Self::OrderNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Refused(Refusal::UnknownProducts(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_product"),
            Self::Refused(Refusal::InsufficientStock { .. }) => (StatusCode::CONFLICT, "insufficient_stock"),
            Self::Refused(Refusal::PriceMismatch { .. }) => (StatusCode::CONFLICT, "price_mismatch"),
            Self::StockOverflow(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Database(error) = &self {
            // The client learns nothing; the log gets the whole cause chain.
            tracing::error!(error = %error, source = ?std::error::Error::source(error), "request failed");
        }
        error_response(status, code, self.to_string())
    }
}

/// A path id: a positive integer, or a 400.
pub fn positive_id(raw: i64, what: &'static str) -> Result<i64> {
    if raw > 0 { Ok(raw) } else { Err(ApiError::InvalidId(what)) }
}
