//! The command API's errors and the status code and JSON body of each.

use analytics_kit::http::{database_error, error_response};
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
    #[error("product {0} does not exist")]
    ProductNotFound(i64),
    #[error("order {0} does not exist")]
    OrderNotFound(i64),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("stock of product {0} would exceed 1000000000")]
    StockOverflow(i64),
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("this Idempotency-Key was used for a different request; use a new key for a new request")]
    IdempotencyKeyReused,
    /// The commit failed on the way: it may have been done. Never a 503 (which invites a blind retry,
    /// and so a second order); a retry is safe only with an Idempotency-Key.
    #[error("the outcome is unknown: the database connection failed during the commit")]
    CommitUnknown(sqlx::Error),
    #[error("internal error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::ProductNotFound(_) | Self::OrderNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Refused(Refusal::UnknownProducts(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_product"),
            Self::Refused(Refusal::InsufficientStock { .. }) => (StatusCode::CONFLICT, "insufficient_stock"),
            Self::Refused(Refusal::PriceMismatch { .. }) => (StatusCode::CONFLICT, "price_mismatch"),
            Self::Refused(Refusal::TotalTooLarge { .. }) => (StatusCode::UNPROCESSABLE_ENTITY, "total_too_large"),
            Self::StockOverflow(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            Self::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Self::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::CommitUnknown(_) => (StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(error) => return database_error(error),
            Self::CommitUnknown(error) => tracing::error!(%error, "a commit failed; its outcome is unknown"),
            _ => {}
        }
        let (status, code) = self.status_and_code();
        error_response(status, code, self.to_string())
    }
}
